"""The worker's side of its child processes (executor/child.py is the child's side)."""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
from typing import Any

from django.db import connections

from executor.child import Job, child_main
from executor.models import TaskRecord


class Child:
    """One child process and the attempt it is running, if any."""

    def __init__(self, ctx: Any, index: int, siblings: list[Child]) -> None:
        self.index = index
        self.cancel_flag = ctx.RawValue("b", 0)
        parent_end, child_end = ctx.Pipe()
        # Connections must not cross a fork: the child opens its own when a task needs one.
        connections.close_all()
        self.process = ctx.Process(
            target=child_main,
            args=(child_end, self.cancel_flag, [s.conn for s in siblings]),
            name=f"executor-child-{index}",
            daemon=True,
        )
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.record: TaskRecord | None = None
        self.deadline = 0.0
        self.dead = False

    def start(self, record: TaskRecord) -> None:
        self.record = record
        self.deadline = time.monotonic() + record.timeout
        self.cancel_flag.value = 0
        self.conn.send(job_for(record))

    def kill(self) -> None:
        self.dead = True
        self.process.kill()
        self.process.join(5)
        self.conn.close()

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
            self.conn.close()


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
    }
