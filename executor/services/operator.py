"""Operator and housekeeping writes: cancel, retry, prune.

Cancel and retry given an ``actor`` (``user:<pk>``: the admin's actions) are operator
actions: each task they change gets an audit entry (``task.cancel``, ``task.retry``),
appended once the change is committed. A task's own state changes are not audited: they
live in its row (docs/operations.md, "What is audited")."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from executor.compat import get_module_path, task_finished
from executor.db import write_transaction
from executor.exceptions import TaskCancelled
from executor.models import Status, TaskRecord
from executor.services.common import db_alias, error_entry, log_state
from executor.signals import task_signal_send
from grace.audit_writer import safe_log


def _operator_audit(action: str, actor: str | None, records: list[TaskRecord]) -> None:
    """One audit entry per task an operator changed, after the change commits."""
    if actor is None or not records:
        return
    entries = [(f"task:{r.id}", {"task": r.task_name, "status": str(r.status),
                                 "cancel_requested": r.cancel_requested}) for r in records]

    def append() -> None:
        for resource, payload in entries:
            safe_log(action=action, actor=actor, resource=resource, payload=payload,
                     wait=False)

    transaction.on_commit(append, using=db_alias(), robust=True)


def task_prune(*, backend: str, retain: int, limit: int = 500) -> int:
    """Delete finished tasks beyond the newest ``retain`` (at most ``limit`` per call)."""
    using = db_alias()
    stale = list(
        TaskRecord.objects.using(using)
        .finished()
        .filter(backend_name=backend)
        .order_by("-finished_at", "-sequence")
        .values_list("sequence", flat=True)[retain : retain + limit]
    )
    if not stale:
        return 0
    deleted, _ = TaskRecord.objects.using(using).filter(sequence__in=stale).delete()
    return deleted


def task_cancel(*, task_id: str, actor: str | None = None) -> str | None:
    """Cancel a task: READY ones never run, RUNNING ones are asked to stop.

    Returns the status afterwards (``None`` for an unknown id). A RUNNING task sees the
    request as ``context.cancel_requested``; its timeout stops it otherwise. A READY task
    is finished here: ``task_finished`` is sent once the cancel is committed. With an
    ``actor``, a cancel that changed the task is audited (``task.cancel``).
    """
    using = db_alias()
    finished = changed = False
    with write_transaction(using):
        record = (
            TaskRecord.objects.using(using).select_for_update().filter(id=task_id).first()
        )
        if record is None:
            return None
        if record.status == Status.READY:
            record.status, record.finished_at = Status.CANCELLED, timezone.now()
            record.cancel_requested = True
            record.errors = [
                *record.errors,
                error_entry(
                    exc_path=get_module_path(TaskCancelled), message="cancelled before it ran",
                    traceback="", attempt=record.attempts, worker_id="",
                ),
            ]
            record.save(using=using, update_fields=[
                "status", "finished_at", "cancel_requested", "errors",
            ])
            log_state(record, "cancelled")
            finished = changed = True
        elif record.status == Status.RUNNING and not record.cancel_requested:
            record.cancel_requested = True
            record.save(using=using, update_fields=["cancel_requested"])
            log_state(record, "cancel requested")
            changed = True
        if changed:
            _operator_audit("task.cancel", actor, [record])
    if finished:
        task_signal_send(task_finished, record)
    return str(record.status)


def task_retry(*, task_ids: Iterable[str], actor: str | None = None) -> int:
    """Send FAILED or CANCELLED tasks back to READY with a fresh set of attempts. With an
    ``actor``, each task sent back is audited (``task.retry``)."""
    using = db_alias()
    with write_transaction(using):
        records = list(
            TaskRecord.objects.using(using)
            .select_for_update()
            .filter(id__in=list(task_ids), status__in=[Status.FAILED, Status.CANCELLED])
        )
        for record in records:
            record.status = Status.READY
            record.attempts, record.worker_ids = 0, []
            record.cancel_requested = False
            record.finished_at = record.run_after = record.lease_expires_at = None
            record.started_at = record.last_attempted_at = None
            record.return_value = None
            record.save(using=using)
        _operator_audit("task.retry", actor, records)
    for record in records:
        log_state(record, "sent back to the queue by an operator")
    return len(records)


