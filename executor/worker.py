"""``Worker``: claims tasks in batches and runs them in a pool of child processes.

One worker process (``manage.py run_executor``) is a single-threaded loop that owns the
database work (claim, heartbeat, complete, reclaim, prune) and ``concurrency`` child
processes that run task code (executor/child.py). A task past its timeout has its child
killed and replaced. SIGTERM or SIGINT: stop claiming, give unstarted tasks back, let
running ones finish within ``shutdown_grace_seconds``, exit 0; a second signal aborts at
once, giving every held task back, and exits 1.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import socket
import time
from collections import deque
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

from django.db import close_old_connections

from executor.backend import ExecutorBackend, task_result_from_record
from executor.child import Reply, task_resolve
from executor.compat import get_module_path, task_backends, task_finished, task_started
from executor.db import with_retries
from executor.exceptions import InvalidExecutorOptions, TaskCancelled, TaskTimeout, WorkerLost
from executor.models import TaskRecord
from executor.pool import Child
from executor.selectors import cancel_requested_sequences, queue_has_ready
from executor.services import (
    Outcome,
    error_entry,
    log_state,
    task_claim,
    task_complete,
    task_heartbeat,
    task_prune,
    task_reclaim_stale,
    task_release,
)

logger = logging.getLogger("executor")

FLUSH_SECONDS = 0.05  # the longest a finished result waits to be written
HOUSEKEEPING_SECONDS = 1.0  # cancel requests are noticed within this


def worker_id_new() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{random.randrange(16**4):04x}"


class Worker:
    def __init__(
        self,
        *,
        backend: str = "default",
        queues: list[str] | None = None,
        concurrency: int = 4,
        batch: int = 32,
        interval: float = 0.5,
        burst: bool = False,
        worker_id: str | None = None,
    ) -> None:
        instance = task_backends[backend]
        if not isinstance(instance, ExecutorBackend):
            raise InvalidExecutorOptions(f"TASKS[{backend!r}] is not an ExecutorBackend.")
        self.backend = instance
        self.options = instance.settings
        self.queues = sorted(queues or instance.queues)
        self.concurrency = concurrency
        self.batch = max(batch, concurrency)
        self.interval = interval
        self.burst = burst
        self.worker_id = worker_id or worker_id_new()
        self.ctx = multiprocessing.get_context("fork")
        self.children: list[Child] = []
        self.pending: deque[TaskRecord] = deque()
        self.outcomes: list[Outcome] = []
        self.oldest_outcome = 0.0
        self.stopping = 0  # signals received: 1 drain, 2+ abort
        self.stop_deadline = 0.0
        self.next_claim = 0.0
        self.next_housekeeping = 0.0
        self.next_heartbeat = 0.0
        self.next_reclaim = 0.0
        self.finished_since_prune = 0
        self.exhausted = False  # the last claim found nothing due
        self._wakeup_r = self._wakeup_w = self._previous_wakeup = -1
        self._previous_handlers: dict[int, Any] = {}

    # --- signals -------------------------------------------------------------------------

    def install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_w, False)
        os.set_blocking(self._wakeup_r, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._wakeup_w)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop claiming and drain (first call); abort at once (second call)."""
        self.stopping += 1

    # --- main loop -----------------------------------------------------------------------

    def run(self) -> int:
        """Run until shut down (or, with ``burst``, until the queues are empty); exit code."""
        logger.info(
            "worker %s started: queues=%s concurrency=%s batch=%s",
            self.worker_id, ",".join(self.queues), self.concurrency, self.batch,
            extra={"worker_id": self.worker_id},
        )
        self.children = []
        for index in range(self.concurrency):
            self.children.append(Child(self.ctx, index, self.children))
        try:
            return self._loop()
        finally:
            for child in self.children:
                child.stop()
            self._flush(force=True)
            if self.finished_since_prune:
                self._prune()
            if self._wakeup_w >= 0:
                for signum, handler in self._previous_handlers.items():
                    signal.signal(signum, handler)
                signal.set_wakeup_fd(self._previous_wakeup)
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)
            close_old_connections()
            logger.info("worker %s stopped", self.worker_id, extra={"worker_id": self.worker_id})

    def _loop(self) -> int:
        drain_started = False
        while True:
            now = time.monotonic()
            if self.stopping >= 2:
                self._abort()
                return 1
            if self.stopping == 1 and not drain_started:
                drain_started = True
                self.stop_deadline = now + self.options.shutdown_grace_seconds
                logger.info("worker %s draining: %s running", self.worker_id, len(self._busy()))
                self._release(list(self.pending), "worker shutting down")
                self.pending.clear()
            if drain_started:
                if not self._busy():
                    return 0
                if now >= self.stop_deadline:
                    self._release_running("shutdown grace period over")
                    return 0
            else:
                self._claim(now)
            self._dispatch()
            if self.burst and self._idle() and self.exhausted and not self._has_ready():
                return 0
            self._wait(now)
            self._enforce_timeouts()
            self._flush()
            self._housekeeping()

    def _busy(self) -> list[Child]:
        return [c for c in self.children if c.record is not None]

    def _idle(self) -> bool:
        return not self.pending and not self._busy() and not self.outcomes

    def _claim(self, now: float) -> None:
        free = self.concurrency - len(self._busy())
        if len(self.pending) >= free or now < self.next_claim:
            return
        try:
            claimed = with_retries(
                lambda: task_claim(
                    worker_id=self.worker_id, backend=self.backend.alias, queues=self.queues,
                    limit=self.batch - len(self.pending), lease_seconds=self.options.lease_seconds,
                ),
                what="claim",
            )
        except Exception:
            logger.exception("claim failed; trying again in %ss", self.interval)
            close_old_connections()
            claimed = []
        self.exhausted = not claimed
        if claimed:
            self.pending.extend(claimed)
            self.next_claim = now
        else:
            # Nothing due: poll again later (jittered so workers do not poll in step).
            self.next_claim = now + self.interval * random.uniform(0.8, 1.2)
            if self._idle():
                close_old_connections()

    def _dispatch(self) -> None:
        for child in self.children:
            if not self.pending:
                return
            if child.record is None:
                record = self.pending.popleft()
                try:
                    child.start(record)
                except OSError:
                    self._child_lost(child)
                    continue
                log_state(record, "started", worker_id=self.worker_id)
                self._send(task_started, record)

    def _wait(self, now: float) -> None:
        wakeups = [self.next_housekeeping]
        if self.outcomes:
            wakeups.append(self.oldest_outcome + FLUSH_SECONDS)
        busy = self._busy()
        wakeups.extend(c.deadline for c in busy)
        if self.stopping == 0 and len(self.pending) < self.concurrency - len(busy):
            wakeups.append(self.next_claim)
        if self.stopping:
            wakeups.append(self.stop_deadline)
        timeout = max(0.0, min(wakeups) - now)
        watched: list[Any] = [c.conn for c in busy]
        if self._wakeup_r >= 0:
            watched.append(self._wakeup_r)
        for ready in wait(watched, timeout):
            if isinstance(ready, int):
                try:
                    os.read(ready, 512)
                except BlockingIOError:
                    pass
                continue
            child = next(c for c in busy if c.conn is ready)
            try:
                reply: Reply = child.conn.recv()
            except (EOFError, OSError):
                self._child_lost(child)
                continue
            self._record_reply(child, reply)

    def _record_reply(self, child: Child, reply: Reply) -> None:
        record = child.record
        assert record is not None
        child.record = None
        _, ok, value, error = reply
        if error is not None:
            error = error_entry(
                exc_path=error["exception_class_path"], message=error["message"],
                traceback=error["traceback"], attempt=record.attempts, worker_id=self.worker_id,
            )
        self._add_outcome(Outcome(record=record, ok=ok, return_value=value, error=error))

    def _add_outcome(self, outcome: Outcome) -> None:
        if not self.outcomes:
            self.oldest_outcome = time.monotonic()
        self.outcomes.append(outcome)

    def _fail(self, record: TaskRecord, exc_class: type, message: str) -> None:
        entry = error_entry(
            exc_path=get_module_path(exc_class), message=message, traceback="",
            attempt=record.attempts, worker_id=self.worker_id,
        )
        self._add_outcome(Outcome(record=record, ok=False, error=entry))

    def _replace(self, child: Child) -> None:
        others = [c for c in self.children if c is not child and not c.dead]
        self.children[self.children.index(child)] = Child(self.ctx, child.index, others)

    def _child_lost(self, child: Child) -> None:
        record = child.record
        child.kill()
        if record is not None:
            code = child.process.exitcode
            self._fail(record, WorkerLost, f"the child process running it exited (code {code})")
        self._replace(child)

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for child in self._busy():
            if now >= child.deadline and child.record is not None:
                record = child.record
                child.kill()
                self._fail(record, TaskTimeout, f"timed out after {record.timeout:g}s; killed")
                self._replace(child)

    def _flush(self, *, force: bool = False) -> None:
        if not self.outcomes:
            return
        due = time.monotonic() - self.oldest_outcome >= FLUSH_SECONDS
        if not (force or due or len(self.outcomes) >= self.batch or not self.pending):
            return
        outcomes, self.outcomes = self.outcomes, []
        try:
            records = with_retries(
                lambda: task_complete(
                    worker_id=self.worker_id, outcomes=outcomes, options=self.options
                ),
                what="complete",
            )
        except Exception:
            logger.exception("recording %s results failed; will retry", len(outcomes))
            close_old_connections()
            self.outcomes = outcomes + self.outcomes
            self.oldest_outcome = time.monotonic()
            return
        for record in records:
            if record.is_finished:
                self.finished_since_prune += 1
                self._send(task_finished, record)
        if self.finished_since_prune >= 200:
            self._prune()

    def _prune(self) -> None:
        self.finished_since_prune = 0
        try:
            while task_prune(backend=self.backend.alias, retain=self.options.retain_finished):
                pass
        except Exception:
            logger.exception("pruning finished tasks failed")
            close_old_connections()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now < self.next_housekeeping:
            return
        self.next_housekeeping = now + HOUSEKEEPING_SECONDS
        lease = self.options.lease_seconds
        try:
            if self._busy() or self.pending:
                self._poll_cancels()
                if now >= self.next_heartbeat:
                    self.next_heartbeat = now + lease / 3
                    with_retries(
                        lambda: task_heartbeat(worker_id=self.worker_id, lease_seconds=lease),
                        what="heartbeat",
                    )
            if now >= self.next_reclaim:
                self.next_reclaim = now + lease / 2 * random.uniform(0.8, 1.2)
                with_retries(lambda: task_reclaim_stale(worker_id=self.worker_id), what="reclaim")
            if self.finished_since_prune:
                self._prune()
        except Exception:
            logger.exception("housekeeping failed; trying again in %ss", HOUSEKEEPING_SECONDS)
            close_old_connections()

    def _poll_cancels(self) -> None:
        wanted = cancel_requested_sequences(worker_id=self.worker_id)
        if not wanted:
            return
        for child in self._busy():
            if child.record is not None and child.record.sequence in wanted:
                child.cancel_flag.value = 1
        for record in [r for r in self.pending if r.sequence in wanted]:
            self.pending.remove(record)
            self._fail(record, TaskCancelled, "cancelled before it started")

    def _has_ready(self) -> bool:
        return queue_has_ready(backend=self.backend.alias, queues=self.queues)

    def _release(self, records: list[TaskRecord], reason: str) -> None:
        if records:
            try:
                with_retries(
                    lambda: task_release(worker_id=self.worker_id, records=records, reason=reason),
                    what="release",
                )
            except Exception:
                logger.exception("releasing %s tasks failed; leases will expire", len(records))

    def _release_running(self, reason: str) -> None:
        held = []
        for child in self._busy():
            assert child.record is not None
            held.append(child.record)
            child.kill()
            child.record = None
        self._release(held, reason)

    def _abort(self) -> None:
        logger.warning("worker %s aborting: releasing every task it holds", self.worker_id)
        self._release(list(self.pending), "worker aborted")
        self.pending.clear()
        self._release_running("worker aborted")

    def _send(self, signal_: Any, record: TaskRecord) -> None:
        if not signal_.receivers:
            return
        try:
            result = task_result_from_record(record, task=task_resolve(record.task_path))
            signal_.send(type(self.backend), task_result=result)
        except Exception:
            logger.exception("a receiver of %s failed for task %s", signal_, record.id)
