"""The ``tasks`` source of the admin's request page: the tasks a request enqueued
(registered from ``ExecutorConfig.ready()``)."""

from __future__ import annotations

from executor.models import TaskRecord
from grace.request_story import Cell, Moment, StorySource, admin_url


def _tasks(request_id: str, limit: int) -> list[TaskRecord]:
    return list(TaskRecord.objects.filter(request_id=request_id).order_by("sequence")[:limit])


def _moments(task: TaskRecord) -> list[Moment]:
    url = admin_url(task)
    moments = [Moment(task.enqueued_at, "task", f"{task.task_name} enqueued", url)]
    if task.finished_at:
        moments.append(Moment(task.finished_at, "task", f"{task.task_name} {task.status} "
                              f"after {task.attempts} attempt(s)", url))
    return moments


def _row(task: TaskRecord) -> list[Cell]:
    return [
        Cell(task.task_name, admin_url(task)),
        Cell(task.id, css="code"),
        Cell(task.status),
        Cell(task.attempts),
        Cell(task.enqueued_at.strftime("%H:%M:%S")),
        Cell(task.finished_at.strftime("%H:%M:%S") if task.finished_at else "-"),
    ]


TASKS_SOURCE = StorySource(
    name="tasks", title="Tasks enqueued", read=_tasks, moments=_moments,
    columns=("task", "id", "status", "attempts", "enqueued", "finished"), row=_row, order=30,
)
