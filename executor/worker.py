"""``Worker``: claims tasks in batches and runs them in a pool of child processes.

One worker process (``manage.py run_executor``) is a single-threaded loop that owns the
database work (claim, heartbeat, complete, reclaim, prune) and ``concurrency`` child
processes that run task code (executor/pool.py, executor/child.py). A task past its timeout
has its child killed and replaced. SIGTERM or SIGINT: stop claiming, give unstarted tasks
back, let running ones finish within ``shutdown_grace_seconds``, exit 0; a second signal
aborts at once, giving every held task back, and exits 1. The same signals sent to the
whole process group (Ctrl-C, ``kill -TERM -PGID``, systemd's default
``KillMode=control-group``) do exactly the same: the children leave them to the worker
(executor/child.py), which kills them (SIGKILL) when the grace period is over.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import random
import signal
import socket
import time
from collections import deque
from types import FrameType
from typing import Any

from django.db import close_old_connections, connections

from executor.backend import ExecutorBackend
from executor.child import WORKER_SIGNALS
from executor.compat import get_module_path, task_backends, task_started
from executor.db import with_retries
from executor.exceptions import InvalidExecutorOptions, TaskCancelled
from executor.housekeeping import Housekeeping
from executor.models import TaskRecord
from executor.pool import Events, Pool
from executor.selectors import queue_has_ready
from executor.services import AttemptResult, error_entry, task_complete_and_claim, task_release
from executor.signals import task_signal_send

logger = logging.getLogger("executor")

FLUSH_SECONDS = 0.05  # the longest a finished result waits to be written
CONNECTION_SECONDS = 300.0  # an idle worker keeps its database connection this long


WORKER_ID_MAX = TaskRecord._meta.get_field("worker_id").max_length or 64


def worker_id_new() -> str:
    """host:pid:random, at most 40 + 1 + 7 + 1 + 4 = 53 characters (``WORKER_ID_MAX``)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{random.randrange(16**4):04x}"


def worker_id_problem(worker_id: str) -> str | None:
    """Why ``worker_id`` cannot name a worker, or None. It is written to every task the
    worker claims: longer than the column, every claim would fail on PostgreSQL (SQLite
    stores it whole), and two workers with the same empty id could not be told apart."""
    if not worker_id.strip():
        return "must not be empty"
    if len(worker_id) > WORKER_ID_MAX:
        return (f"is {len(worker_id)} characters long: at most {WORKER_ID_MAX} fit in the "
                "task table's worker_id column")
    if worker_id != worker_id.strip() or not worker_id.isprintable():
        return "must be printable, without leading or trailing spaces"
    return None


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
        if worker_id is not None and (problem := worker_id_problem(worker_id)):
            raise InvalidExecutorOptions(f"worker_id {worker_id!r} {problem}.")
        if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
            raise InvalidExecutorOptions(f"interval must be a finite number of seconds > 0, "
                                         f"not {interval!r}.")
        if concurrency < 1 or batch < 1:
            raise InvalidExecutorOptions("concurrency and batch must be at least 1.")
        self.backend = instance
        self.options = instance.settings
        self.queues = sorted(queues or instance.queues)
        self.concurrency = concurrency
        self.batch = max(batch, concurrency)
        self.interval = interval
        self.burst = burst
        self.worker_id = worker_id_new() if worker_id is None else worker_id
        self.pending: deque[TaskRecord] = deque()
        self.results: list[AttemptResult] = []
        self.oldest_outcome = 0.0
        self.stopping = 0  # signals received: 1 drain, 2+ abort
        self.next_claim = 0.0
        self.exhausted = False  # the last claim found nothing due
        self.housekeeping = Housekeeping(worker_id=self.worker_id, backend=instance)
        self._wakeup_r = self._wakeup_w = self._previous_wakeup = -1
        self._previous_handlers: dict[int, Any] = {}

    # --- signals -------------------------------------------------------------------------

    def install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_w, False)
        os.set_blocking(self._wakeup_r, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._wakeup_w)
        for signum in WORKER_SIGNALS:  # the children leave these to the worker
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
        self.pool = Pool(multiprocessing.get_context("fork"), self.concurrency)
        try:
            return self._loop()
        finally:
            self.pool.stop()
            self.stopping = max(self.stopping, 1)  # claim nothing more
            self._sync(time.monotonic(), force=True)
            self.housekeeping.prune(force=True)
            if self._wakeup_w >= 0:
                for signum, handler in self._previous_handlers.items():
                    signal.signal(signum, handler)
                signal.set_wakeup_fd(self._previous_wakeup)
                os.close(self._wakeup_r)
                os.close(self._wakeup_w)
            close_old_connections()
            logger.info("worker %s stopped", self.worker_id, extra={"worker_id": self.worker_id})

    def _loop(self) -> int:
        stop_deadline: float | None = None
        while True:
            now = time.monotonic()
            if self.stopping >= 2:
                logger.warning("worker %s aborting: releasing every task it holds", self.worker_id)
                self._release([*self.pending, *self.pool.kill_all()], "worker aborted")
                return 1
            if self.stopping == 1 and stop_deadline is None:
                stop_deadline = now + self.options.shutdown_grace_seconds
                logger.info("worker %s draining: %s running", self.worker_id,
                            len(self.pool.busy()))
                self.pool.drain()
                self._release(list(self.pending), "worker shutting down")
                self.pending.clear()
            if stop_deadline is not None:
                if not self.pool.busy():
                    return 0
                if now >= stop_deadline:
                    self._release(self.pool.kill_all(), "shutdown grace period over")
                    return 0
            else:
                self._sync(now)
                self._handle(self.pool.dispatch(self.pending))
            if self.burst and self._idle() and self.exhausted and not self._has_ready():
                return 0
            self._handle(self.pool.collect(self._timeout(now, stop_deadline), self._wakeups()))
            self._handle(self.pool.enforce_timeouts())
            self._sync(time.monotonic())
            wanted = self.housekeeping.tick(holding=self.holds_tasks())
            if wanted:
                self.cancel_pending(wanted)

    def _idle(self) -> bool:
        return not self.pending and not self.pool.busy() and not self.results

    def _timeout(self, now: float, stop_deadline: float | None) -> float:
        wakeups = [self.housekeeping.next_tick]
        if self.results:
            wakeups.append(self.oldest_outcome + FLUSH_SECONDS)
        deadline = self.pool.next_deadline()
        if deadline is not None:
            wakeups.append(deadline)
        if stop_deadline is not None:
            wakeups.append(stop_deadline)
        elif len(self.pending) < self.pool.free_slots():
            wakeups.append(self.next_claim)
        return max(0.0, min(wakeups) - now)

    def _wakeups(self) -> list[int]:
        return [self._wakeup_r] if self._wakeup_r >= 0 else []

    def _wakeups_drain(self) -> None:
        """Read the signal bytes: left in the pipe, they would end every later wait at once."""
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass

    def _sync(self, now: float, *, force: bool = False) -> None:
        """Write finished results and claim the next batch: one transaction for both."""
        want = 0
        if (not self.stopping and now >= self.next_claim
                and len(self.pending) < self.pool.free_slots()):
            want = self.batch - len(self.pending)
        flush = bool(self.results) and (
            force or bool(want) or len(self.results) >= self.batch
            or time.monotonic() - self.oldest_outcome >= FLUSH_SECONDS
            or (not self.pending and not self.pool.busy())
        )
        if not want and not flush:
            return
        results: list[AttemptResult] = []
        if flush:
            results, self.results = self.results, []
        try:
            completed, claimed = with_retries(
                lambda: task_complete_and_claim(
                    worker_id=self.worker_id, results=results, options=self.options,
                    backend=self.backend.alias, queues=self.queues, limit=want,
                    lease_seconds=self.options.lease_seconds,
                ),
                what="complete and claim",
            )
        except Exception:
            logger.exception("writing %s results / claiming failed; will retry", len(results))
            close_old_connections()
            if results:
                self.results = results + self.results
                self.oldest_outcome = time.monotonic()
            self.next_claim = now + self.interval
            return
        self.housekeeping.finished += sum(1 for record in completed if record.is_finished)
        self.housekeeping.prune(force=False)
        if not want:
            return
        self.exhausted = not claimed
        if claimed:
            self.pending.extend(claimed)
            self.next_claim = now
        else:
            # Nothing due: poll again later (jittered so workers do not poll in step).
            self.next_claim = now + self.interval * random.uniform(0.8, 1.2)
            if self._idle():  # a busy worker keeps its connection; an idle one too,
                self._connections_rest()  # but for broken or old ones

    def _connections_rest(self) -> None:
        """Between two polls of an empty queue: close the connections that are broken, or
        older than ``CONN_MAX_AGE`` or ``CONNECTION_SECONDS``, whichever is longer. With
        Django's default ``CONN_MAX_AGE`` of 0 an idle worker would otherwise reconnect at
        every poll (a new PostgreSQL backend twice a second); a kept connection is checked
        (``CONN_HEALTH_CHECKS``) before its next use instead."""
        now = time.monotonic()
        for conn in connections.all(initialized_only=True):
            if conn.connection is None or conn.close_at is None:
                continue
            born = getattr(conn, "_executor_born", None)
            if born is None or born[0] is not conn.connection:
                born = conn._executor_born = (conn.connection, now)  # type: ignore[attr-defined]
            conn.close_at = max(conn.close_at, born[1] + CONNECTION_SECONDS)
            conn.health_check_enabled = True  # type: ignore[attr-defined]
        close_old_connections()

    def _handle(self, events: Events) -> None:
        if events.woken:
            self._wakeups_drain()
        for record in events.started:  # the child logged "started" as it began
            task_signal_send(task_started, record, sender=type(self.backend))
        for record, (_, ok, value, error) in events.replies:
            entry = None
            if error is not None:
                entry = error_entry(
                    exc_path=error["exception_class_path"], message=error["message"],
                    traceback=error["traceback"], attempt=record.attempts,
                    worker_id=self.worker_id,
                )
            self._add_result(AttemptResult(record=record, ok=bool(ok), return_value=value,
                                      error=entry))
        for record, exc_class, message in events.failed:
            self.fail(record, exc_class, message)
        if events.returned:
            if self.stopping:
                self._release(events.returned, "worker shutting down")
            else:
                self.pending.extendleft(reversed(events.returned))

    def _add_result(self, result: AttemptResult) -> None:
        if not self.results:
            self.oldest_outcome = time.monotonic()
        self.results.append(result)

    def fail(self, record: TaskRecord, exc_class: type[BaseException], message: str) -> None:
        entry = error_entry(
            exc_path=get_module_path(exc_class), message=message, traceback="",
            attempt=record.attempts, worker_id=self.worker_id,
        )
        self._add_result(AttemptResult(record=record, ok=False, error=entry))

    def cancel_pending(self, sequences: set[int]) -> None:
        """Cancel requests for held tasks: unstarted ones end now, running ones are told."""
        for record in [r for r in self.pending if r.sequence in sequences]:
            self.pending.remove(record)
            self.fail(record, TaskCancelled, "cancelled before it started")
        self.pool.cancel(sequences)

    def _has_ready(self) -> bool:
        return queue_has_ready(backend=self.backend.alias, queues=self.queues)

    def _release(self, records: list[TaskRecord], reason: str) -> None:
        if not records:
            return
        try:
            with_retries(
                lambda: task_release(worker_id=self.worker_id, records=records, reason=reason),
                what="release",
            )
        except Exception:
            logger.exception("releasing %s tasks failed; leases will expire", len(records))

    def holds_tasks(self) -> bool:
        return bool(self.pending or self.pool.busy())
