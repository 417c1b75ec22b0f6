"""The contract every reply backend implements.

A backend turns a ``ReplyRequest`` (the message after Hunter redaction, the recent
conversation, the knowledge recall found) into a ``ReplyResult``. It streams text
pieces through ``on_token`` as they come and returns the final result.

Rules for implementers:

- ``generate`` is a coroutine and never blocks the event loop: blocking work (a local
  model) runs in a thread of its own.
- Cancelling the coroutine (a deadline, a ``stop``, a client that went away) stops
  generation at once: close the upstream stream, tell the local model to stop. The
  caller keeps the pieces it already received through ``on_token``.
- A failure raises ``ReplyBackendError`` (or a subclass) with a short reason; the
  pipeline then answers with the fallback backend.
- ``available()`` is cheap and never raises: False when the backend cannot answer at
  all (a missing package or model file), so the pipeline goes straight to the fallback.
- The caller's deadline is in a context variable: ``deadline_remaining()`` gives the
  seconds left (``None`` without one). A backend that waits on its own (a retry, a
  ``Retry-After``) checks it; the caller also enforces it with a timeout around
  ``generate``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

TokenCallback = Callable[[str], Awaitable[None]]


async def text_stream(text: str, on_token: TokenCallback | None, *, started: float) -> int | None:
    """Hand a reply that is whole already (a quote, a sum, the fallback's answer) to
    ``on_token`` as one piece: it is all there, so smaller pieces would only cost a frame
    each (a websocket message, an SSE event; a word at a time was 1.7 ms of CPU per
    exchange on the websocket) and show nothing sooner. The milliseconds from ``started``
    to that piece (None without ``on_token`` or text)."""
    if on_token is None or not text:
        return None
    await on_token(text)
    return int((time.monotonic() - started) * 1000)


_deadline: ContextVar[float | None] = ContextVar("grace_reply_deadline", default=None)


@contextmanager
def deadline_set(seconds: float | None) -> Iterator[None]:
    """Within the block, backends have ``seconds`` (from now) to answer; None: no limit."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline_remaining() -> float | None:
    """Seconds left before the caller's deadline (never below 0), or None without one."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class ReplyBackendError(Exception):
    """A backend could not produce a reply. Do not raise directly: use a subclass."""

    flag = "llm_error"


class ReplyBackendUnavailable(ReplyBackendError):
    """The backend cannot answer at all (not installed, no model file, no server)."""


class ReplyBackendFailed(ReplyBackendError):
    """The backend tried and failed (an upstream error, a malformed answer)."""


class ReplyBackendTimeout(ReplyBackendError):
    """The backend did not finish within the time it was given."""

    flag = "llm_timeout"


@dataclass(frozen=True)
class KnowledgeHit:
    """A knowledge entry found by recall, best first."""

    title: str
    body: str
    score: float = 0.0
    """Relevance in 0..1 (hybrid search: keyword and meaning), higher is better."""
    entry_id: int | None = None
    source: str = ""
    """Where the entry came from: the ingested file (``docs/x.md``, ``starter:grace.md``)."""

    @property
    def id(self) -> int | None:
        """The ``KnowledgeEntry`` primary key (``entry_id``)."""
        return self.entry_id


@dataclass(frozen=True)
class ReplyRequest:
    message: str
    """The user's message after Hunter redaction: nothing redacted reaches a backend."""
    domain: str = "all"
    history: list[dict[str, str]] = field(default_factory=list)
    """Recent conversation, oldest first: ``{"role": "user"|"assistant", "content": str}``."""
    knowledge: list[KnowledgeHit] = field(default_factory=list)
    request_id: str | None = None
    max_tokens: int | None = None


@dataclass
class ReplyResult:
    text: str
    backend: str
    """The alias of the backend that answered (``metadata.backend``)."""
    model: str = ""
    finish_reason: str = "stop"
    """``stop``, ``length``, ``stopped`` (cancelled by the caller) or backend-specific."""
    usage: dict[str, int] = field(default_factory=dict)
    """``prompt_tokens`` and ``completion_tokens`` when the backend knows them."""
    latency_ms: int = 0
    first_token_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific facts, e.g. ``{"unanswered": True}`` from the fallback."""
    sources: list[KnowledgeHit] = field(default_factory=list)
    """The knowledge entries the reply used (``metadata.sources``), best first."""


class ReplyBackend:
    """Base class; subclasses implement ``generate`` (and ``available`` if it can fail)."""

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        self.alias = alias
        self.options = options

    def available(self) -> bool:
        return True

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release pooled connections or models; called on shutdown and in tests."""
