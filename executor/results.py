"""A task row as the Tasks API sees it: its ``Task`` and its ``TaskResult``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.utils.module_loading import import_string

from executor.compat import InvalidTaskError, Task, TaskError, TaskResult, TaskResultStatus

STATUS_TO_RESULT = {
    "READY": TaskResultStatus.READY,
    "RUNNING": TaskResultStatus.RUNNING,
    "SUCCESSFUL": TaskResultStatus.SUCCESSFUL,
    "FAILED": TaskResultStatus.FAILED,
    # The Tasks API has no "cancelled": a cancelled task is finished and did not succeed.
    "CANCELLED": TaskResultStatus.FAILED,
}


@lru_cache(maxsize=1024)
def task_resolve(path: str) -> Task:
    """The task at a dotted path (``InvalidTaskError`` when it is not one)."""
    task = import_string(path)
    if not isinstance(task, Task):
        raise InvalidTaskError(f"{path} is not a task (decorate it with @task)")
    return task


@lru_cache(maxsize=1024)
def _task_using(path: str, priority: int, queue_name: str, backend: str) -> Task:
    return task_resolve(path).using(priority=priority, queue_name=queue_name, backend=backend)


def task_from_record(record: Any) -> Task:
    """The row's task with the priority, queue, backend and ``run_after`` it was enqueued with."""
    task = _task_using(record.task_path, record.priority, record.queue_name, record.backend_name)
    return task.using(run_after=record.run_after) if record.run_after else task


def task_result_from_record(record: Any, *, task: Task | None = None) -> TaskResult:
    """The Tasks API's view of a row (``CANCELLED`` reads as ``FAILED``)."""
    result: TaskResult = TaskResult(
        task=task or task_from_record(record),
        id=record.id,
        status=STATUS_TO_RESULT[record.status],
        enqueued_at=record.enqueued_at,
        started_at=record.started_at,
        last_attempted_at=record.last_attempted_at,
        finished_at=record.finished_at,
        args=record.args,
        kwargs=record.kwargs,
        backend=record.backend_name,
        errors=[
            TaskError(exception_class_path=e["exception_class_path"], traceback=e["traceback"])
            for e in record.errors
        ],
        worker_ids=list(record.worker_ids),
    )
    object.__setattr__(result, "_return_value", record.return_value)
    return result
