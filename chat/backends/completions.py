"""Assembling a reply from OpenAI-style ``chat.completion.chunk`` dicts.

Both model backends get the same chunks: the openai backend parses them out of SSE
events, the local backend receives them from xllamacpp's callback. ``ChunkReader``
checks each one (an ``error`` member, a missing or mistyped field is a clear
``ReplyBackendFailed``), forwards text pieces to ``on_token`` and keeps the finish
reason, the usage and the model name for the final ``ReplyResult``.
"""

from __future__ import annotations

import time
from typing import Any

from chat.backends.base import ReplyBackendFailed, ReplyResult, TokenCallback
from chat.backends.usage import usage_note

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def usage_from(raw: Any) -> dict[str, int]:
    """The token counts of an OpenAI ``usage`` object (missing ones left out)."""
    if not isinstance(raw, dict):
        return {}
    return {key: int(raw[key]) for key in USAGE_KEYS if isinstance(raw.get(key), int)}


def error_message(error: Any) -> str:
    message = error.get("message", error) if isinstance(error, dict) else error
    return str(message)[:200]


class ChunkReader:
    def __init__(self, *, model: str, started: float, on_token: TokenCallback | None) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = {}
        self.model = model
        self.started = started
        self.on_token = on_token
        self.first_token_ms: int | None = None

    async def feed(self, chunk: Any) -> None:
        """Apply one chunk; raises ``ReplyBackendFailed`` for an error or a malformed one."""
        if not isinstance(chunk, dict):
            raise ReplyBackendFailed(f"malformed stream event: {str(chunk)[:120]!r}")
        if "error" in chunk:
            raise ReplyBackendFailed(
                f"upstream error in the stream: {error_message(chunk['error'])}"
            )
        self.model = str(chunk.get("model") or self.model)
        if chunk.get("usage"):
            self.usage = usage_from(chunk["usage"])
        choices = chunk.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise ReplyBackendFailed("malformed stream event: choices is not a list of objects")
        usage_note(chunk)  # counted before on_token: a stop or timeout may come while it waits
        for choice in choices[:1]:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                if not isinstance(piece, str):
                    raise ReplyBackendFailed("malformed stream event: content is not text")
                if self.first_token_ms is None:
                    self.first_token_ms = int((time.monotonic() - self.started) * 1000)
                self.parts.append(piece)
                if self.on_token is not None:
                    await self.on_token(piece)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def result(self, alias: str) -> ReplyResult:
        return ReplyResult(
            text="".join(self.parts),
            backend=alias,
            model=self.model,
            finish_reason=self.finish_reason or "stop",
            usage=self.usage,
            latency_ms=int((time.monotonic() - self.started) * 1000),
            first_token_ms=self.first_token_ms,
        )
