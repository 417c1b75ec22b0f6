"""Token usage and latency per reply backend, kept in-process.

Every answer (and every failure) of a backend goes through ``usage_record``: it adds to
per-backend totals (``usage_snapshot()``), writes one log line with the figures as
structured fields, and calls any listener added with ``usage_subscribe`` (chat/observers.py
turns them into metrics). Nothing here touches a database.

Token counts when a call ends early. A server reports its usage at the end of a reply;
a reply that is stopped, times out or fails mid-stream never gets there. So while a
backend call runs, a ``UsageTally`` (``usage_tally()``, a context variable) counts what
came back: each streamed piece (one token per piece on llama.cpp, vLLM, Ollama and
OpenAI) and the last counts the server sent (``usage``, or llama.cpp's per-token
``timings``: the embedded model reports its real prompt and completion counts on every
piece). The recorded event then carries those counts, and says how they were counted.

The totals also keep each backend's last outcome (``last``: status, wall-clock time,
consecutive failures): the health check reads it instead of calling the backend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

RECENT = 500
FAILED = frozenset({"timeout", "error"})
"""Statuses that say the backend could not answer (``stopped`` and ``circuit_open`` do not)."""

REPORTED = "reported"
"""The counts are the server's own (its ``usage`` or, from llama.cpp, its ``timings``)."""
STREAMED = "streamed"
"""The completion tokens were counted from the streamed pieces (the server reported none)."""


@dataclass(frozen=True)
class UsageEvent:
    backend: str
    status: str
    """How the call ended: ``ok``, ``timeout``, ``error``, ``stopped`` or ``circuit_open``."""
    model: str = ""
    prompt_tokens: int = 0
    """0 when unknown (a server that never sent its usage)."""
    completion_tokens: int = 0
    latency_ms: int = 0
    first_token_ms: int | None = None
    request_id: str | None = None
    counted: str = REPORTED
    """``reported`` or ``streamed`` (see the module's docstring)."""


@dataclass
class UsageTally:
    """What one backend call has sent back so far (see the module's docstring)."""

    pieces: int = 0
    reported: dict[str, int] = field(default_factory=dict)

    def note(self, chunk: Any) -> None:
        """Take in one OpenAI-style ``chat.completion.chunk`` (as a dict)."""
        if not isinstance(chunk, dict):
            return
        for choice in (chunk.get("choices") or [])[:1]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                if delta["content"]:
                    self.pieces += 1
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._report(usage.get("prompt_tokens"), usage.get("completion_tokens"))
            return
        timings = chunk.get("timings")  # llama.cpp with "timings_per_token"
        if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int):
            cached = timings.get("cache_n")
            prompt = timings["prompt_n"] + (cached if isinstance(cached, int) else 0)
            self._report(prompt, timings.get("predicted_n"))

    def _report(self, prompt: Any, completion: Any) -> None:
        if isinstance(prompt, int) and prompt >= 0:
            self.reported["prompt_tokens"] = prompt
        if isinstance(completion, int) and completion >= 0:
            self.reported["completion_tokens"] = completion

    def usage(self) -> tuple[dict[str, int], str]:
        """``(usage, counted)``: the server's counts where it sent them; else the pieces."""
        usage = dict(self.reported)
        counted = REPORTED
        if usage.get("completion_tokens", 0) < self.pieces:
            usage["completion_tokens"] = self.pieces
            counted = STREAMED
        return usage, counted


_tally: ContextVar[UsageTally | None] = ContextVar("grace_usage_tally", default=None)


@contextmanager
def usage_tally() -> Iterator[UsageTally]:
    """Count, within the block, what the backend called in it streams back."""
    tally = UsageTally()
    token = _tally.set(tally)
    try:
        yield tally
    finally:
        _tally.reset(token)


def usage_note(chunk: Any) -> None:
    """A backend received ``chunk``: count it in the running call's tally, if any."""
    tally = _tally.get()
    if tally is not None:
        tally.note(chunk)


@dataclass
class BackendTotals:
    calls: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms_total: int = 0
    recent_latency_ms: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT))
    recent_first_token_ms: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT))
    last_status: str = ""
    last_at: float = 0.0
    consecutive_failures: int = 0


_totals: dict[str, BackendTotals] = {}
_listeners: list[Callable[[UsageEvent], None]] = []
_lock = threading.Lock()


def usage_line(event: UsageEvent) -> str:
    """The figures of one call as the log line says them."""
    prompt = f"{event.prompt_tokens} prompt"
    tail = ""
    if event.counted == STREAMED:
        tail = ", counted from the stream"
        if not event.prompt_tokens:
            prompt = "prompt tokens unknown"
    return (
        f"reply backend {event.backend}: {event.status} in {event.latency_ms} ms "
        f"({prompt} + {event.completion_tokens} completion tokens{tail})"
    )


def usage_record(event: UsageEvent) -> None:
    """Add one backend call to the totals, log it, and tell the listeners."""
    with _lock:
        totals = _totals.setdefault(event.backend, BackendTotals())
        totals.calls += 1
        totals.statuses[event.status] = totals.statuses.get(event.status, 0) + 1
        totals.prompt_tokens += event.prompt_tokens
        totals.completion_tokens += event.completion_tokens
        totals.latency_ms_total += event.latency_ms
        totals.recent_latency_ms.append(event.latency_ms)
        if event.first_token_ms is not None:
            totals.recent_first_token_ms.append(event.first_token_ms)
        if event.status == "ok" or event.status in FAILED:
            totals.last_status, totals.last_at = event.status, time.time()
            totals.consecutive_failures = (
                totals.consecutive_failures + 1 if event.status in FAILED else 0
            )
        listeners = list(_listeners)
    if logger.isEnabledFor(logging.INFO):  # its fields are plain values: a shallow copy
        logger.info("%s", usage_line(event), extra={"llm_usage": dict(vars(event))})
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            logger.exception("usage listener %r failed", listener)


def usage_snapshot() -> dict[str, dict[str, Any]]:
    """Totals per backend alias: calls, calls per status, tokens, recent latencies (ms),
    and ``last``: the last answered or failed call (status, ``at`` as a Unix time, and
    ``failures``: how many calls in a row have failed)."""
    with _lock:
        return {
            name: {
                "calls": t.calls,
                "statuses": dict(t.statuses),
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
                "latency_ms_total": t.latency_ms_total,
                "recent_latency_ms": list(t.recent_latency_ms),
                "recent_first_token_ms": list(t.recent_first_token_ms),
                "last": {
                    "status": t.last_status,
                    "at": t.last_at,
                    "failures": t.consecutive_failures,
                }
                if t.last_status
                else None,
            }
            for name, t in _totals.items()
        }


def usage_subscribe(listener: Callable[[UsageEvent], None]) -> Callable[[], None]:
    """Call ``listener`` for every recorded event; returns a function that unsubscribes."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def usage_reset() -> None:
    with _lock:
        _totals.clear()
