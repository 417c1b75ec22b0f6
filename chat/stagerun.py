"""Running a synchronous stage so that it can never hold up the reply.

Each call runs in a thread of the stage pool (``sync_to_async(thread_sensitive=False)``
with our own executor: never the request's shared sync thread, so a hung stage blocks
nothing else) and is awaited under ``asyncio.timeout``. When the budget runs out the
pipeline moves on at once; the thread finishes (or stays stuck) on its own, with its own
database connection. A ``threading.Event`` tells the thread it was abandoned, so it does
not commit work the pipeline already reported as failed.

Connections: a stage thread keeps its connection for ``GRACE_STAGE_CONN_MAX_AGE``
seconds (0: closes it after every stage), and always closes one left in a transaction,
after an error, or when the database reports it unusable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

from chat.conf import chat_settings
from chat.exceptions import StageAbandoned, StageVerdict
from grace.db import sqlite_writes_serialized
from grace.faults import FaultInjected, fault_inject

logger = logging.getLogger(__name__)

T = TypeVar("T")
OPENED_AT = "_grace_stage_opened_at"

class StageCancel(threading.Event):
    """Set when the pipeline gave up on a stage. ``commit_point()``, in the stage's thread,
    is its point of no return (just before a commit): it raises ``StageAbandoned`` when the
    stage was given up, else records in ``committed`` what is being committed; both under
    one lock with ``set()``, so after a timeout the pipeline knows whether the thread may
    still commit."""

    def __init__(self) -> None:
        super().__init__()
        self._handoff = threading.Lock()
        self.committed = ""
        """What passed the point of no return (``commit_point``'s ``what``), or ""."""

    def set(self) -> None:
        with self._handoff:
            super().set()

    def commit_point(self, what: str = "stage") -> None:
        with self._handoff:
            if self.is_set():
                raise StageAbandoned(f"{what} abandoned before commit")
            self.committed = what

    def commit_refused(self) -> None:
        """After ``commit_point``: the database refused the commit (it said so: nothing
        of it is in), so ``committed`` is "" again, unless the pipeline gave up meanwhile
        (it has then read ``committed`` already)."""
        with self._handoff:
            if not self.is_set():
                self.committed = ""


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_local = threading.local()


def stage_time_left() -> float:
    """Seconds left in the current stage's budget (in a stage thread)."""
    deadline = getattr(_local, "deadline", None)
    return 30.0 if deadline is None else max(0.0, deadline - time.monotonic())


@contextmanager
def write_serialized(using: str = "default") -> Iterator[None]:
    """On SQLite, let one writing thread of this process (a pipeline stage, the audit
    writer) write at a time (``grace.db.sqlite_writes_serialized``): threads queue on a
    lock that wakes them at once instead of in SQLite's busy handler, which keeps p99
    down when many requests write together. Waiting is bounded by the stage's budget.
    """
    with sqlite_writes_serialized(using, timeout=stage_time_left()) as taken:
        if not taken:
            raise TimeoutError("waited the whole stage budget for the database write lock")
        yield


def stage_executor() -> ThreadPoolExecutor:
    """The process-wide pool of stage threads (``GRACE_STAGE_THREADS``)."""
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(
                    max_workers=chat_settings.STAGE_THREADS, thread_name_prefix="grace-stage"
                )
    return _executor


def connections_release() -> None:
    """After a stage: keep a healthy idle connection for reuse, close anything else."""
    max_age = chat_settings.STAGE_CONN_MAX_AGE
    now = time.monotonic()
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        opened = getattr(conn, OPENED_AT, None)
        if opened is None:
            opened = now
            setattr(conn, OPENED_AT, now)
        unhealthy = conn.in_atomic_block or conn.errors_occurred or not conn.get_autocommit()
        if max_age <= 0 or unhealthy or now - opened >= max_age:
            try:
                conn.close()
            except Exception:
                logger.warning("could not close a stage connection", exc_info=True)
            if hasattr(conn, OPENED_AT):
                delattr(conn, OPENED_AT)


def _in_thread(
    stage: str, func: Callable[..., T], cancel: threading.Event, budget: float, args: tuple
) -> T:
    _local.deadline = time.monotonic() + budget
    try:
        fault_inject(stage, timeout=budget, cancel=cancel)
        return func(*args, cancel)
    finally:
        _local.deadline = None
        connections_release()


async def stage_run(
    stage: str,
    func: Callable[..., T],
    *args: Any,
    budget: float,
    cancel: StageCancel | None = None,
) -> tuple[str, T | None]:
    """Run ``func(*args, cancel)`` in a stage thread within ``budget`` seconds.

    Returns ``("ok", value)``, ``("timeout", None)`` or ``("error", None)``; raises
    only a ``StageVerdict`` from the stage, or ``CancelledError`` when the caller itself
    is cancelled. ``cancel`` (a new one by default) is set when the call returns.
    """
    if budget <= 0:
        return "skipped", None
    cancel = cancel or StageCancel()
    call = sync_to_async(_in_thread, thread_sensitive=False, executor=stage_executor())
    timer = asyncio.timeout(budget)
    try:
        async with timer:
            value = await call(stage, func, cancel, budget, args)
        return "ok", value
    except StageVerdict:
        raise
    except TimeoutError:
        if timer.expired():
            logger.warning("stage %s timed out after %.2fs", stage, budget)
            return "timeout", None
        logger.warning("stage %s failed: TimeoutError", stage, exc_info=True)
        return "error", None
    except Exception as exc:
        if isinstance(exc, FaultInjected):
            logger.warning("stage %s failed: %s", stage, exc)
        else:
            logger.warning("stage %s failed: %s: %s", stage, type(exc).__name__, exc, exc_info=True)
        return "error", None
    finally:
        cancel.set()


def _plain(func: Callable[..., T], args: tuple) -> T:
    try:
        return func(*args)
    finally:
        connections_release()


async def stage_call(func: Callable[..., T], *args: Any, timeout: float) -> T:
    """Run ``func(*args)`` in a stage thread within ``timeout`` seconds; exceptions
    (``TimeoutError`` included) propagate. For short database reads outside the stages
    (the API token lookup): no per-request thread, a bounded wait."""
    call = sync_to_async(_plain, thread_sensitive=False, executor=stage_executor())
    async with asyncio.timeout(timeout):
        return await call(func, args)

