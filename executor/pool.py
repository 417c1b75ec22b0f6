"""The worker's side of its child processes (executor/child.py is the child's side).

Each child holds up to ``PIPELINE`` jobs: the one it runs and the next, so it never waits
for the worker between two tasks. A job starts when the one before it ends (the child
answers in order), which gives each running job its exact deadline. Methods return
``Events``: what started, what finished, what failed (timeout, lost child) and what comes
back unstarted.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from django.db import connections

from executor.child import Job, Reply, child_main
from executor.exceptions import TaskTimeout, WorkerLost
from executor.models import TaskRecord

PIPELINE = 2


@dataclass
class Events:
    started: list[TaskRecord] = field(default_factory=list)
    replies: list[tuple[TaskRecord, Reply]] = field(default_factory=list)
    failed: list[tuple[TaskRecord, type[BaseException], str]] = field(default_factory=list)
    returned: list[TaskRecord] = field(default_factory=list)
    woken: bool = False  # a signal arrived

    def add(self, other: Events) -> Events:
        self.started += other.started
        self.replies += other.replies
        self.failed += other.failed
        self.returned += other.returned
        self.woken = self.woken or other.woken
        return self


def job_for(record: TaskRecord) -> Job:
    return {
        "sequence": record.sequence,
        "id": record.id,
        "task_path": record.task_path,
        "args": record.args,
        "kwargs": record.kwargs,
        "backend_name": record.backend_name,
        "enqueued_at": record.enqueued_at,
        "started_at": record.started_at,
        "last_attempted_at": record.last_attempted_at,
        "worker_ids": record.worker_ids,
        "request_id": record.request_id,
        "queue_name": record.queue_name,
        "attempt": record.attempts,
        "worker_id": record.worker_id,
    }


class Child:
    """One child process and the jobs it holds (the first one is running)."""

    def __init__(self, ctx: Any, index: int, siblings: Iterable[Connection], drain: Any) -> None:
        self.index = index
        self.cancel_flag = ctx.RawValue("q", 0)  # sequence of the job asked to stop
        parent_end, child_end = ctx.Pipe()
        # Connections must not cross a fork: the child opens its own when a task needs one.
        connections.close_all()
        self.process = ctx.Process(
            target=child_main,
            args=(child_end, self.cancel_flag, drain, list(siblings)),
            name=f"executor-child-{index}",
            daemon=True,
        )
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.inflight: deque[TaskRecord] = deque()
        self.head_since = 0.0
        self.dead = False

    @property
    def deadline(self) -> float:
        return self.head_since + self.inflight[0].timeout

    def send(self, record: TaskRecord) -> bool:
        """Hand a job over; True when it starts at once (the child was free)."""
        first = not self.inflight
        if first:
            self.head_since = time.monotonic()
        self.inflight.append(record)
        self.conn.send(job_for(record))
        return first

    def kill(self) -> list[TaskRecord]:
        """Kill the process; returns the jobs it held."""
        self.dead = True
        self.process.kill()
        self.process.join(5)
        self.conn.close()
        held, self.inflight = list(self.inflight), deque()
        return held

    def stop(self) -> None:
        if self.dead:
            return
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(1)
        if self.process.is_alive():
            self.kill()
        else:
            self.dead = True
            self.conn.close()


class Pool:
    def __init__(self, ctx: Any, size: int) -> None:
        self.ctx = ctx
        self.drain_flag = ctx.RawValue("b", 0)
        self.children: list[Child] = []
        for index in range(size):
            self.children.append(self._spawn(index))

    def _spawn(self, index: int) -> Child:
        siblings = [c.conn for c in self.children if not c.dead and c.index != index]
        return Child(self.ctx, index, siblings, self.drain_flag)

    def _replace(self, child: Child) -> None:
        self.children[self.children.index(child)] = self._spawn(child.index)

    def busy(self) -> list[Child]:
        return [c for c in self.children if c.inflight]

    def free_slots(self) -> int:
        return sum(PIPELINE - len(c.inflight) for c in self.children)

    def next_deadline(self) -> float | None:
        return min((c.deadline for c in self.busy()), default=None)

    def dispatch(self, pending: deque[TaskRecord]) -> Events:
        """Give pending jobs to free children first, then queue one behind each runner."""
        events = Events()
        for depth in range(1, PIPELINE + 1):
            for child in list(self.children):
                while pending and len(child.inflight) < depth:
                    record = pending.popleft()
                    try:
                        if child.send(record):
                            events.started.append(record)
                    except OSError:  # it died while idle, or with its head running
                        events.add(self._lost(child, started=len(child.inflight) > 1))
                        break
        return events

    def collect(self, timeout: float, extra: list[int]) -> Events:
        """Wait up to ``timeout`` for replies (or a byte on one of ``extra``); read them all."""
        events = Events()
        busy = self.busy()
        for ready in wait([*(c.conn for c in busy), *extra], timeout):
            if isinstance(ready, int):
                events.woken = True
                continue
            child = next(c for c in busy if c.conn is ready)
            try:
                while child.inflight and child.conn.poll():
                    reply: Reply = child.conn.recv()
                    record = child.inflight.popleft()
                    child.head_since = time.monotonic()
                    if reply[1] is None:  # the child was told to drain: never started
                        events.returned.append(record)
                    else:
                        events.replies.append((record, reply))
                    if child.inflight and reply[1] is not None:
                        events.started.append(child.inflight[0])
            except (EOFError, OSError):
                events.add(self._lost(child, started=True))
        return events

    def _lost(self, child: Child, *, started: bool) -> Events:
        events = Events()
        code = child.process.exitcode
        held = child.kill()
        if held and started:
            message = f"the child process running it exited (code {code})"
            events.failed.append((held.pop(0), WorkerLost, message))
        events.returned += held
        self._replace(child)
        return events

    def enforce_timeouts(self) -> Events:
        events = Events()
        now = time.monotonic()
        for child in self.busy():
            if now >= child.deadline:
                held = child.kill()
                head = held.pop(0)
                message = f"timed out after {head.timeout:g}s; killed"
                events.failed.append((head, TaskTimeout, message))
                events.returned += held
                self._replace(child)
        return events

    def cancel(self, sequences: set[int]) -> None:
        """Let the jobs with these sequences see ``context.cancel_requested``."""
        for child in self.children:
            for record in child.inflight:
                if record.sequence in sequences:
                    child.cancel_flag.value = record.sequence
                    break

    def drain(self) -> None:
        """Children start no further job: queued ones come back as ``returned``."""
        self.drain_flag.value = 1

    def kill_all(self) -> list[TaskRecord]:
        held: list[TaskRecord] = []
        for child in self.children:
            if not child.dead:
                held += child.kill()
        return held

    def stop(self) -> None:
        for child in self.children:
            child.stop()
