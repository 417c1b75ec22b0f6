"""``QueueFull`` on the API: a view that enqueues answers 503 with ``Retry-After``.

Imported from grace/urls.py; registers its handler on the project's one NinjaAPI, and
``POST /api/tasks/``: staff (API token or session) enqueue one of the tasks named in
``GRACE_EXECUTOR_API_TASKS``; 202 with its id, or 503 ``queue_full`` writing nothing. Each
task enqueued there is audited (``task.enqueue``, the staff user as actor): an operator
action, unlike the task's own state changes (docs/operations.md, "What is audited").
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from ninja import Field, Router, Schema
from ninja.responses import Status
from pydantic import ConfigDict

from executor.compat import Task
from executor.conf import executor_settings
from executor.exceptions import QueueFull
from grace.api import ApiError, errors
from grace.audit_writer import safe_log
from grace.auth import ApiTokenAuth, SessionUserAuth
from grace.errors import error_response
from grace.observers import actor_of


def queue_full_response(exc: QueueFull) -> HttpResponse:
    """The 503 error body for a full queue; usable from any view, not only ninja's."""
    return error_response(
        status=503,
        error="queue_full",
        message=f"The {exc.queue_name!r} queue is full; try again in {exc.retry_after} seconds.",
        details=[{"queue": exc.queue_name, "max_pending": exc.max_pending}],
        headers={"Retry-After": str(exc.retry_after)},
    )


def on_queue_full(request: HttpRequest, exc: Any) -> HttpResponse:
    return queue_full_response(exc)


class TaskIn(Schema):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(max_length=255, description="Dotted path, one of GRACE_EXECUTOR_API_TASKS.")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    priority: int | None = Field(None, ge=-100, le=100)


class TaskOut(Schema):
    id: str
    task: str
    status: str
    priority: int
    queue: str


router = Router(tags=["tasks"], auth=[ApiTokenAuth(), SessionUserAuth()])


@router.post(
    "/",
    response={202: TaskOut, **errors(401, 403, 404, 415, 422, 503)},
    summary="Enqueue a task (staff)",
)
async def task_enqueue_api(request: HttpRequest, payload: TaskIn) -> Status[dict[str, Any]]:
    """Enqueue one allowed task; 503 ``queue_full`` (with ``Retry-After``) when its queue
    holds ``max_pending`` READY tasks: nothing is written then."""
    via = getattr(request.auth, "via", "")  # type: ignore[attr-defined]
    user = request.user if via == "token" else await request.auser()
    if not (user.is_active and user.is_staff):
        raise ApiError("Only staff may enqueue tasks.", status=403, error="forbidden")
    if payload.task not in executor_settings.API_TASKS:
        raise ApiError(
            f"No task {payload.task!r} may be enqueued over the API.", status=404, error="not_found"
        )
    task: Task = import_string(payload.task)
    if payload.priority is not None:
        task = task.using(priority=payload.priority)
    result = await task.aenqueue(*payload.args, **payload.kwargs)
    safe_log(action="task.enqueue", actor=actor_of(user_id=user.pk), resource=f"task:{result.id}",
             payload={"task": payload.task, "queue": task.queue_name, "priority": task.priority},
             wait=False)
    return Status(
        202,
        {
            "id": result.id,
            "task": payload.task,
            "status": str(result.status),
            "priority": task.priority,
            "queue": task.queue_name,
        },
    )
