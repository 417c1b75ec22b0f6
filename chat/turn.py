"""``Turn``: the state one message carries through the reply pipeline, from the message
as received to the reply and what each stage reported; and the flags a reply can carry."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from chat.backends.base import KnowledgeHit, ReplyResult
from chat.security import CompiledRule, Inspection
from grace.auth import Owner

logger = logging.getLogger(__name__)

TokenCallback = Callable[[str], Awaitable[None]]

# Flags that tell what happened without anything having failed: not ``degraded``.
INFORMATIONAL_FLAGS = frozenset({"security_alert", "redacted", "blocked", "stopped"})


def is_degraded(flags: list[str]) -> bool:
    return any(flag not in INFORMATIONAL_FLAGS for flag in flags)


class Tokens:
    """Collects the pieces of the reply and forwards them to the caller's ``on_token``;
    a callback that raises (a client gone) is not called again."""

    def __init__(self, on_token: TokenCallback | None = None) -> None:
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


@dataclass
class Turn:
    """One message through the pipeline: what each stage found, and what goes back.

    Stage threads read it and hand what they found back to the event loop, which changes
    the turn (a thread the pipeline abandoned must not change what it moved on with);
    they set only ``verified`` (the conversation is the owner's) and ``stored`` (the
    store transaction committed), facts that stay true however late they come.
    """

    owner: Owner
    message: str
    domain: str
    request_id: str
    conversation_id: uuid.UUID
    new_conversation: bool
    deadline: float = 0.0
    """``time.monotonic()`` by which the reply must be out."""
    tokens: Tokens = field(default_factory=Tokens)
    stop: asyncio.Event | None = None
    """Set by the caller to end generation early (the websocket's ``stop``)."""
    received: datetime = field(default_factory=timezone.now)
    user_message_id: uuid.UUID = field(default_factory=uuid.uuid4)
    reply_id: uuid.UUID = field(default_factory=uuid.uuid4)
    regenerate_of: uuid.UUID | None = None
    """Answering a stored user message again (``user_message_id``): the reply is stored
    as a new alternative of its replies, not as a new exchange."""
    text: str = ""
    """The message as stored, logged, enqueued and sent to a model: its secrets masked."""
    rules: list[CompiledRule] | None = None
    """Hunter's rules as loaded for this turn (masking and inspection use the same)."""
    masked: Inspection | None = None
    """The masking's result: the secrets found (``text`` is the masked message)."""
    inspection: Inspection | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    knowledge: list[KnowledgeHit] = field(default_factory=list)
    result: ReplyResult | None = None
    stages: dict[str, str] = field(default_factory=dict)
    """Each stage's status: ``ok``, ``skipped``, ``timeout``, ``error`` (inspect: its verdict)."""
    flags: list[str] = field(default_factory=list)
    current: str = ""
    """The stage running now."""
    stored: bool = False
    verified: bool = False
    """Whether the owner's right to ``conversation_id`` was checked (new ones need none)."""
    verify_pending: bool = False
    """Inspection left the ownership check to recall (no thread of its own for it)."""
    followup: str | None = None
    """The followup's status when the store's transaction carried its tasks."""

    def __post_init__(self) -> None:
        if not self.text:
            self.text = self.message

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)

    @property
    def blocked(self) -> bool:
        return self.inspection is not None and self.inspection.blocked

    @property
    def degraded(self) -> bool:
        return is_degraded(self.flags)
