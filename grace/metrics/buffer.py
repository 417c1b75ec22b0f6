"""Recording metrics: an in-memory buffer and a flusher thread, never on the request path.

``metric_record`` appends one tuple to a bounded buffer (``GRACE_METRICS_BUFFER``; beyond
it measurements are dropped and counted) and never touches a database or raises. One
daemon thread per process writes the buffer to the metrics database every
``GRACE_METRICS_FLUSH_SECONDS`` (grace/metrics/store.py), samples the registered gauges
once a minute, and prunes old rows every few minutes. A failed write
is logged (at most once a minute) and its batch dropped: it never reaches a reply.

``GRACE_FAULTS=metrics=error|timeout|hang`` makes the flusher fail, overrun or block.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from django.db import connections

from grace.background import test_process_note
from grace.faults import fault_inject
from grace.features import feature_enabled
from grace.metrics.catalog import CATALOG
from grace.metrics.store import Event, metrics_db_writable, metrics_prune, metrics_write
from grace.ops_conf import ops_settings
from grace.request_id import request_id_get

logger = logging.getLogger("grace.metrics")

SAMPLE_SECONDS = 60.0
PRUNE_SECONDS = 300.0
LOG_EVERY_SECONDS = 60.0
MAX_BATCH = 20_000
LABEL_CHARS = 120


def _label(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)[:LABEL_CHARS]


class _Flusher:
    def __init__(self) -> None:
        self.buffer: deque[Event] = deque()
        self.start_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.done = threading.Condition()
        self.generation = 0
        self.running = False
        self.dropped = 0
        self.failures = 0
        self.written = 0
        self.last_error = ""
        self.last_logged = 0.0
        self.next_sample = 0.0
        self.next_prune = time.monotonic() + 60.0

    def add(self, event: Event) -> None:
        if len(self.buffer) >= ops_settings.METRICS_BUFFER:
            self.dropped += 1
            return
        self.buffer.append(event)
        if self.thread is None:
            self.start()

    def start(self) -> None:
        test_process_note()
        with self.start_lock:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=contextvars.Context().run, args=(self.run,),
                    name="grace-metrics-flusher", daemon=True,
                )
                self.thread.start()

    def run(self) -> None:
        while True:
            self.wake.wait(ops_settings.METRICS_FLUSH_SECONDS)
            self.wake.clear()
            self.flush_once()

    def take(self) -> list[Event]:
        events: list[Event] = []
        while self.buffer and len(events) < MAX_BATCH:
            events.append(self.buffer.popleft())
        return events

    def flush_once(self) -> None:
        with self.done:
            self.running = True
        events: list[Event] = []
        try:
            if not metrics_db_writable():
                self.buffer.clear()
                return
            events = self.take()
            events.extend(self.housekeeping())
            _fault()
            if events:
                metrics_write(events)
                self.written += len(events)
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            now = time.monotonic()
            if now - self.last_logged >= LOG_EVERY_SECONDS:
                self.last_logged = now
                logger.warning(
                    "metrics not written (%s): %s measurements dropped (%s failures so far)",
                    self.last_error, len(events), self.failures,
                )
        finally:
            try:
                connections.close_all()
            except Exception:
                logger.debug("closing the flusher's connections failed", exc_info=True)
            with self.done:
                self.running = False
                self.generation += 1
                self.done.notify_all()

    def housekeeping(self) -> list[Event]:
        """Gauge samples when due (and pruning); a failure here costs no measurements."""
        now = time.monotonic()
        sampled: list[Event] = []
        try:
            if now >= self.next_sample:
                self.next_sample = now + SAMPLE_SECONDS
                sampled = gauges_sample()
            if now >= self.next_prune:
                self.next_prune = now + PRUNE_SECONDS
                metrics_prune()
        except Exception as exc:
            logger.info("metrics housekeeping failed: %s: %s", type(exc).__name__, exc)
        return sampled

    def flush_now(self, timeout: float) -> bool:
        """Have the thread flush what is buffered now; wait at most ``timeout``."""
        if self.thread is None:
            self.start()
        deadline = time.monotonic() + timeout
        with self.done:
            target = self.generation + (2 if self.running else 1)
            self.wake.set()
            while self.generation < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.done.wait(remaining)
        return True


def _fault() -> None:
    fault_inject("metrics", timeout=ops_settings.METRICS_FLUSH_SECONDS)


_flusher = _Flusher()


def _after_fork() -> None:
    global _flusher
    _flusher = _Flusher()


os.register_at_fork(after_in_child=_after_fork)


def metric_record(
    name: str,
    value: float = 1.0,
    *,
    labels: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> None:
    """Buffer one measurement of catalogued metric ``name`` (a counter's increment or an
    observed value); labels not in the catalog are ignored. Never raises."""
    try:
        if not feature_enabled("metrics"):
            return
        metric = CATALOG[name]
        values = tuple(_label((labels or {}).get(label)) for label in metric.labels)
        if request_id is None:
            request_id = request_id_get() or ""
        _flusher.add((name, values, float(value), time.time(), request_id))
    except Exception:
        logger.debug("metric %s not recorded", name, exc_info=True)


def metrics_flush(timeout: float = 2.0) -> bool:
    """Write what is buffered now (the thread does the writing); False on timeout."""
    return _flusher.flush_now(timeout)


def metrics_reset() -> None:
    """Forget buffered measurements and counters (tests)."""
    _flusher.buffer.clear()
    _flusher.dropped = _flusher.failures = 0
    _flusher.next_sample = time.monotonic() + SAMPLE_SECONDS


def metrics_state() -> dict[str, Any]:
    return {
        "buffered": len(_flusher.buffer),
        "dropped": _flusher.dropped,
        "written": _flusher.written,
        "failures": _flusher.failures,
        "last_error": _flusher.last_error,
    }


def gauges_sample() -> list[Event]:
    """Every registered gauge, read now, as metric events."""
    now = time.time()
    events: list[Event] = []
    for name, labels, value in gauges_read():
        metric = CATALOG[name]
        values = tuple(_label(labels.get(label)) for label in metric.labels)
        events.append((name, values, value, now, ""))
    return events


GaugeSource = Callable[[], list[tuple[str, dict[str, str], float]]]
_gauge_sources: list[GaugeSource] = []


def gauge_source_register(source: GaugeSource) -> None:
    """Add a function that reads gauges now: ``[(metric name, labels, value), ...]``
    (an app's queue depth, its circuit breakers). Each metric must be registered."""
    if source not in _gauge_sources:
        _gauge_sources.append(source)


def gauges_read() -> list[tuple[str, dict[str, str], float]]:
    """(metric, labels, value) of every registered gauge, read now."""
    gauges: list[tuple[str, dict[str, str], float]] = []
    for source in _gauge_sources:
        gauges.extend(source())
    return gauges


def _flush_at_exit() -> None:
    if _flusher.buffer and _flusher.thread is not None and metrics_db_writable():
        _flusher.flush_now(2.0)


atexit.register(_flush_at_exit)
