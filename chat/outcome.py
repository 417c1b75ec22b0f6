"""What a reply says about itself: the flags, ``degraded``, and the body every edge
returns (REST 200, the websocket's ``done``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chat.conf import STAGES
from chat.stages import Turn

logger = logging.getLogger(__name__)

TokenCallback = Callable[[str], Awaitable[None]]

FAILURE_FLAGS = {
    "inspect": "inspection_skipped",
    "recall": "recall_failed",
    "respond": "response_fallback",
    "store": "memory_store_failed",
    "followup": "followup_failed",
}
# Flags that tell what happened without anything having failed: not ``degraded``.
INFORMATIONAL_FLAGS = frozenset({"security_alert", "redacted", "blocked", "stopped"})

def is_degraded(flags: list[str]) -> bool:
    return any(flag not in INFORMATIONAL_FLAGS for flag in flags)


class Tokens:
    """Collects the pieces of the current attempt and forwards them to the caller's
    ``on_token``; a callback that raises (a client gone) is not called again."""

    def __init__(self, on_token: TokenCallback | None) -> None:
        self.on_token = on_token
        self.pieces: list[str] = []
        self.broken = False

    async def __call__(self, piece: str) -> None:
        self.pieces.append(piece)
        if self.on_token is None or self.broken:
            return
        try:
            await self.on_token(piece)
        except Exception:
            self.broken = True
            logger.info("on_token failed; no more pieces are forwarded", exc_info=True)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def chat_body(turn: Turn, *, duration_ms: int) -> dict[str, Any]:
    result = turn.result
    stages = {stage: turn.stages.get(stage, "skipped") for stage in STAGES}
    return {
        "response": result.text if result else "",
        "domain": turn.domain,
        "conversation_id": str(turn.conversation_id),
        "message_id": str(turn.reply_id),
        "degraded": is_degraded(turn.flags),
        "request_id": turn.request_id,
        "metadata": {
            "duration_ms": duration_ms,
            "backend": result.backend if result else "",
            "stages": stages,
            "flags": list(turn.flags),
        },
    }
