"""Token usage and latency per reply backend, kept in-process.

Every answer (and every failure) of a backend goes through ``usage_record``: it adds to
per-backend totals (``usage_snapshot()``), writes one log line with the figures as
structured fields, and calls any listener added with ``usage_subscribe`` (chat/observers.py
turns them into metrics). Nothing here touches a database.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

RECENT = 500


@dataclass(frozen=True)
class UsageEvent:
    backend: str
    status: str
    """How the call ended: ``ok``, ``timeout``, ``error``, ``stopped`` or ``circuit_open``."""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    first_token_ms: int | None = None
    request_id: str | None = None


@dataclass
class BackendTotals:
    calls: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms_total: int = 0
    recent_latency_ms: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT))
    recent_first_token_ms: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT))


_totals: dict[str, BackendTotals] = {}
_listeners: list[Callable[[UsageEvent], None]] = []
_lock = threading.Lock()


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
        listeners = list(_listeners)
    logger.info(
        "reply backend %s: %s in %s ms (%s prompt + %s completion tokens)",
        event.backend,
        event.status,
        event.latency_ms,
        event.prompt_tokens,
        event.completion_tokens,
        extra={"llm_usage": asdict(event)},
    )
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            logger.exception("usage listener %r failed", listener)


def usage_snapshot() -> dict[str, dict[str, Any]]:
    """Totals per backend alias: calls, calls per status, tokens, recent latencies (ms)."""
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
