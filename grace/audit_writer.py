"""``safe_log``: append to the audit log without ever raising or holding up the caller.

Entries go to one writer thread per process (its own database connection) through a
bounded queue; the writer appends whatever has queued up in one transaction. A caller
that waits (``wait=True``; the default outside an event loop) waits at most
``GRACE_AUDIT_TIMEOUT`` seconds; a caller on an event loop never waits. When the log
cannot be written the entries go to stderr as JSON log lines instead, so nothing is
lost silently.

The writer also checkpoints the head it wrote (grace/audit_checkpoints.py) at most every
``GRACE_AUDIT_CHECKPOINT_SECONDS``: after a write, when idle, and at exit.

``GRACE_FAULTS=audit=error|timeout|hang`` makes the writer fail, overrun, or block like
a stuck database call, for drills.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connections

from grace.audit import AuditDraft, audit_append
from grace.audit_checkpoints import checkpoint_record
from grace.background import database_writable, in_test_process, test_process_note
from grace.db import sqlite_writes_serialized
from grace.faults import fault_inject
from grace.features import feature_enabled
from grace.models import AuditEntry
from grace.ops_conf import ops_settings
from grace.request_id import request_id_get

logger = logging.getLogger("grace.audit")

BATCH = 500
BATCH_WINDOW = 0.01  # seconds the writer lets entries gather before a transaction
IDLE_CLOSE_SECONDS = 1.0  # an idle writer closes its connection after this
WRITE_LOCK_WAIT = 5.0  # seconds it queues for the process's SQLite write lock


@dataclass
class _Pending:
    draft: AuditDraft
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    sequence: int | None = None


class _Writer:
    """The process's audit writer thread and its queue (made again after a fork)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[_Pending] = queue.Queue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.unfinished = 0
        self.idle = threading.Condition(self.lock)
        self.failures = 0
        self.last_error = ""
        self.head: AuditEntry | None = None  # the newest entry this writer appended
        self.checkpointed = 0  # the sequence of its last checkpoint
        self.last_checkpoint = -math.inf  # time.monotonic() of it
        self.checkpoint_lock = threading.Lock()

    def submit(self, pending: _Pending) -> bool:
        with self.lock:
            if self.unfinished >= max(1, ops_settings.AUDIT_QUEUE):
                return False
            self.unfinished += 1
            if self.thread is None or not self.thread.is_alive():
                test_process_note()
                self.thread = threading.Thread(
                    target=contextvars.Context().run,
                    args=(self.run,),
                    name="grace-audit-writer",
                    daemon=True,
                )
                self.thread.start()
        self.queue.put(pending)
        return True

    def run(self) -> None:
        while True:
            try:
                first = self.queue.get(timeout=IDLE_CLOSE_SECONDS)
            except queue.Empty:
                self.checkpoint()
                # Idle: no connection held open, so a test database or a PostgreSQL
                # maintenance window can go away.
                connections.close_all()
                continue
            time.sleep(BATCH_WINDOW)  # a burst of entries becomes one transaction
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.write(batch)
                if self.queue.empty() and in_test_process():
                    connections.close_all()  # a test database must be droppable at teardown
            finally:
                with self.lock:
                    self.unfinished -= len(batch)
                    if self.unfinished <= 0:
                        self.idle.notify_all()
                for pending in batch:
                    pending.done.set()

    def write(self, batch: list[_Pending]) -> None:
        if not database_writable("default"):
            logger.debug("audit entries not written: a test process writes to test databases")
            return
        try:
            _fault()
            # Queue behind the reply pipeline's writes on SQLite rather than in SQLite's
            # busy handler (it sleeps while every store waits behind it); past the
            # timeout, the write goes ahead under SQLite's own locking.
            with sqlite_writes_serialized("default", timeout=WRITE_LOCK_WAIT):
                rows = audit_append(entries=[p.draft for p in batch])
            for pending, row in zip(batch, rows, strict=True):
                pending.ok, pending.sequence = True, row.sequence
            self.head = rows[-1]
            self.checkpoint()
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            logger.error(
                "audit log unavailable (%s): %s entries not appended",
                self.last_error,
                len(batch),
            )
            for pending in batch:
                draft = pending.draft
                logger.warning(
                    "audit entry not appended: %s %s by %s",
                    draft.action,
                    draft.resource,
                    draft.actor,
                    extra={"audit": _loggable(draft)},
                )
            try:
                connections.close_all()  # a broken connection is not reused
            except Exception:
                logger.debug("closing the audit writer's connection failed", exc_info=True)

    def checkpoint(self, *, force: bool = False) -> None:
        """Checkpoint the head this writer appended, when it is new and the interval has
        passed (``force``: whatever the interval). Never raises."""
        with self.checkpoint_lock:
            head = self.head
            if head is None or head.sequence == self.checkpointed:
                return
            since = time.monotonic() - self.last_checkpoint
            if not force and since < ops_settings.AUDIT_CHECKPOINT_SECONDS:
                return
            if not database_writable("default"):
                return  # after a test run: the path would name the real database's file
            if in_test_process() and not ops_settings.AUDIT_CHECKPOINT_PATH:
                return  # no file beside each test database, left behind in the temp dir
            self.last_checkpoint = time.monotonic()
            try:
                checkpoint_record(
                    sequence=head.sequence,
                    entry_hash=head.entry_hash,
                    created=head.created,
                    key_id=head.key_id,
                    source="writer",
                )
                self.checkpointed = head.sequence
            except Exception as exc:
                logger.error(
                    "audit checkpoint of entry %s failed: %s: %s",
                    head.sequence,
                    type(exc).__name__,
                    exc,
                )

    def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.unfinished > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.idle.wait(remaining)
        return True


def _loggable(draft: AuditDraft) -> dict[str, Any]:
    request_id = draft.request_id if isinstance(draft.request_id, str) else ""
    return {
        "action": draft.action,
        "actor": draft.actor,
        "resource": draft.resource,
        "payload": draft.payload,
        "request_id": request_id,
    }


def _fault() -> None:
    fault_inject("audit", timeout=ops_settings.AUDIT_TIMEOUT)


_writer = _Writer()


def _after_fork() -> None:
    global _writer
    _writer = _Writer()


os.register_at_fork(after_in_child=_after_fork)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def safe_log(
    *,
    action: str,
    actor: str = "system",
    resource: str = "",
    payload: dict[str, Any] | None = None,
    request_id: str | Callable[[], str] | None = None,
    wait: bool | None = None,
    timeout: float | None = None,
) -> bool:
    """Append one entry; never raises.

    ``wait`` (default: unless on an event loop) waits up to ``timeout`` (default
    ``GRACE_AUDIT_TIMEOUT``) and returns whether the entry was appended. Without waiting
    it returns whether the entry was accepted for writing (False: the audit feature is
    off or the queue is full).
    """
    try:
        if not feature_enabled("audit"):
            return False
        if request_id is None:
            request_id = request_id_get() or ""
        draft = AuditDraft(
            action=action,
            actor=actor,
            resource=resource,
            payload=dict(payload or {}),
            request_id=request_id,
        )
        pending = _Pending(draft)
        if not _writer.submit(pending):
            logger.warning(
                "audit queue full: entry dropped: %s %s",
                action,
                resource,
                extra={"audit": _loggable(draft)},
            )
            return False
        if wait is None:
            wait = not _in_event_loop()
        if not wait:
            return True
        bound = ops_settings.AUDIT_TIMEOUT if timeout is None else timeout
        if not pending.done.wait(bound):
            logger.warning("audit entry still pending after %ss: %s %s", bound, action, resource)
            return False
        return pending.ok
    except Exception:
        logger.exception("safe_log failed")
        return False


def audit_flush(timeout: float = 5.0) -> bool:
    """Wait until every queued entry was written (or failed); False on timeout."""
    return _writer.drain(timeout)


def audit_writer_state() -> dict[str, Any]:
    return {
        "pending": _writer.unfinished,
        "failures": _writer.failures,
        "last_error": _writer.last_error,
    }


def _flush_at_exit() -> None:
    if _writer.unfinished and database_writable("default"):
        _writer.drain(2.0)
    _writer.checkpoint(force=True)


atexit.register(_flush_at_exit)
