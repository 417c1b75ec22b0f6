"""Writes on the task table, each one short transaction.

``task_enqueue`` (bounded), ``task_claim``, ``task_complete``, ``task_release``,
``task_heartbeat``, ``task_reclaim_stale``, ``task_prune``, ``task_cancel``, ``task_retry``.
Every state change is logged with the task id and the request ID that enqueued the task.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, router
from django.utils import timezone

from executor.compat import Task, get_module_path, normalize_json
from executor.conf import ExecutorOptions, executor_settings
from executor.db import encode, queue_lock, write_transaction
from executor.exceptions import QueueFull, TaskCancelled, WorkerLost
from executor.models import Status, TaskRecord

logger = logging.getLogger("executor")


def db_alias() -> str:
    return router.db_for_write(TaskRecord)


def log_state(record: TaskRecord, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One log line per state change: ``task <id> <event>`` with the enqueuing request ID."""
    extra = {
        "request_id": record.request_id or None,
        "task_id": record.id,
        "task": record.task_path,
        "queue": record.queue_name,
        "status": record.status,
        "attempt": record.attempts,
        **fields,
    }
    logger.log(level, "task %s %s", record.id, event, extra=extra)


def error_entry(
    *, exc_path: str, message: str, traceback: str, attempt: int, worker_id: str
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "exception_class_path": exc_path,
        "message": message[:2000],
        "traceback": traceback[-20000:],
        "worker_id": worker_id,
        "at": timezone.now().isoformat(),
    }


def retry_delay(*, attempt: int, options: ExecutorOptions) -> float:
    """Exponential backoff with jitter: half the step fixed, half random."""
    step = min(options.retry_backoff_max, options.retry_backoff * 2 ** max(0, attempt - 1))
    return step / 2 + random.uniform(0, step / 2)


def task_enqueue(
    *,
    backend: str,
    options: ExecutorOptions,
    task: Task,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    request_id: str | None,
) -> TaskRecord:
    """Insert one READY task, or raise ``QueueFull`` having written nothing.

    The count and the insert share one write transaction (``BEGIN IMMEDIATE`` on SQLite, a
    per-queue advisory lock on PostgreSQL), so concurrent enqueues never pass the bound.
    """
    using = db_alias()
    payload = normalize_json({"args": list(args), "kwargs": kwargs})
    timeout = getattr(task, "timeout", None) or options.default_timeout
    max_attempts = getattr(task, "max_attempts", None) or options.max_attempts
    with write_transaction(using):
        queue_lock(using=using, backend=backend, queue=task.queue_name)
        if _pending_at_least(using, backend, task.queue_name, options.max_pending):
            raise QueueFull(task.queue_name, options.max_pending, executor_settings.RETRY_AFTER)
        record = TaskRecord.objects.using(using).create(
            task_path=get_module_path(task.func),
            task_name=task.name[:128],
            backend_name=backend,
            queue_name=task.queue_name,
            priority=task.priority,
            args=payload["args"],
            kwargs=payload["kwargs"],
            run_after=task.run_after,
            timeout=float(timeout),
            max_attempts=int(max_attempts),
            request_id=(request_id or "")[:64],
        )
    log_state(record, "enqueued", priority=record.priority)
    return record


def _pending_at_least(using: str, backend: str, queue: str, bound: int) -> bool:
    """Whether the queue holds ``bound`` READY tasks or more.

    Sequences only grow, so the span between the lowest and the highest READY sequence
    bounds the count from above: two index lookups settle most enqueues, and the exact
    ``COUNT`` (linear in the queue's depth) runs only when the span reaches the bound.
    """
    table = connections[using].ops.quote_name(TaskRecord._meta.db_table)
    where = "status = 'READY' AND backend_name = %s AND queue_name = %s"
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT sequence FROM {table} WHERE {where} ORDER BY sequence LIMIT 1), "  # noqa: S608
            f"(SELECT sequence FROM {table} WHERE {where} ORDER BY sequence DESC LIMIT 1)",
            [backend, queue, backend, queue],
        )
        lowest, highest = cursor.fetchone()
        if lowest is None or highest - lowest + 1 < bound:
            return False
        cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", [backend, queue])  # noqa: S608
        return int(cursor.fetchone()[0]) >= bound


def task_claim(
    *, worker_id: str, backend: str, queues: Iterable[str], limit: int, lease_seconds: float
) -> list[TaskRecord]:
    """Mark up to ``limit`` due READY tasks RUNNING for this worker, in run order.

    SQLite: one ``BEGIN IMMEDIATE`` transaction. PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so
    workers on many hosts claim disjoint batches without waiting on each other.
    """
    using = db_alias()
    now = timezone.now()
    lease = now + timedelta(seconds=lease_seconds)
    with write_transaction(using):
        records = list(
            TaskRecord.objects.using(using)
            .claimable(backend=backend, queues=queues)
            .select_for_update(skip_locked=True)[:limit]
        )
        if not records:
            return []
        for record in records:
            record.status = Status.RUNNING
            record.attempts += 1
            record.worker_id = worker_id
            record.worker_ids = [*record.worker_ids, worker_id]
            record.lease_expires_at = lease
            record.started_at = record.started_at or now
            record.last_attempted_at = now
        _update_many(
            using,
            set_fields=(
                "status", "attempts", "worker_id", "worker_ids", "lease_expires_at",
                "started_at", "last_attempted_at",
            ),
            where_fields=("sequence",),
            where_extra="status = 'READY'",
            records=records,
        )
    return records


@dataclass
class Outcome:
    """How one attempt ended, as the worker saw it."""

    record: TaskRecord
    ok: bool
    return_value: Any = None
    error: dict[str, Any] | None = None
    finished_at: datetime = field(default_factory=timezone.now)


def task_complete(
    *, worker_id: str, outcomes: Sequence[Outcome], options: ExecutorOptions
) -> list[TaskRecord]:
    """Record finished attempts in one transaction; failed ones retry while attempts remain.

    A row is only written while this worker still holds it (same worker, same attempt):
    a late result for a task that was reclaimed meanwhile is dropped.
    """
    if not outcomes:
        return []
    using = db_alias()
    records = []
    with write_transaction(using):
        failed = [o.record.sequence for o in outcomes if not o.ok]
        cancelled = set(
            TaskRecord.objects.using(using)
            .filter(sequence__in=failed, cancel_requested=True)
            .values_list("sequence", flat=True)
        ) if failed else set()
        for outcome in outcomes:
            record = outcome.record
            record.lease_expires_at = None
            if outcome.ok:
                record.status = Status.SUCCESSFUL
                record.return_value = outcome.return_value
                record.finished_at = outcome.finished_at
            else:
                record.errors = [*record.errors, outcome.error]
                if record.sequence in cancelled:
                    record.cancel_requested = True
                    record.status = Status.CANCELLED
                    record.finished_at = outcome.finished_at
                elif record.attempts < record.max_attempts:
                    record.status = Status.READY
                    delay = retry_delay(attempt=record.attempts, options=options)
                    record.run_after = outcome.finished_at + timedelta(seconds=delay)
                else:
                    record.status = Status.FAILED
                    record.finished_at = outcome.finished_at
            records.append(record)
        written = _update_many(
            using,
            set_fields=(
                "status", "return_value", "errors", "finished_at", "run_after",
                "lease_expires_at", "cancel_requested",
            ),
            where_fields=("sequence", "worker_id", "attempts"),
            where_extra="status = 'RUNNING'",
            records=records,
        )
    if written != len(records):
        logger.warning(
            "%s of %s results arrived after their lease was lost and were dropped",
            len(records) - written, len(records),
        )
    for record in records:
        if record.status == Status.READY:
            log_state(record, "failed; retrying", logging.WARNING, run_after=str(record.run_after))
        elif record.status == Status.SUCCESSFUL:
            log_state(record, "succeeded")
        elif record.status == Status.CANCELLED:
            log_state(record, "cancelled", logging.WARNING)
        else:
            log_state(record, "failed", logging.ERROR)
    return records


def task_release(*, worker_id: str, records: Sequence[TaskRecord], reason: str) -> int:
    """Give tasks back to the queue (READY) without counting the attempt they did not finish."""
    if not records:
        return 0
    using = db_alias()
    for record in records:
        record.status = Status.READY
        record.attempts -= 1
        record.worker_ids = record.worker_ids[:-1]
        record.lease_expires_at = None
        if record.attempts == 0:
            record.started_at = None
    with write_transaction(using):
        written = _update_many(
            using,
            set_fields=("status", "attempts", "worker_ids", "lease_expires_at", "started_at"),
            where_fields=("sequence", "worker_id"),
            where_extra="status = 'RUNNING'",
            records=records,
        )
    for record in records:
        log_state(record, f"released ({reason})", logging.WARNING)
    return written


def task_heartbeat(*, worker_id: str, lease_seconds: float) -> int:
    """Extend the lease of every task this worker holds."""
    using = db_alias()
    lease = timezone.now() + timedelta(seconds=lease_seconds)
    with write_transaction(using):
        return TaskRecord.objects.using(using).owned_by(worker_id).update(lease_expires_at=lease)


def task_reclaim_stale(*, worker_id: str, limit: int = 100) -> list[TaskRecord]:
    """Put RUNNING tasks whose lease expired back to READY (the lost attempt counts)."""
    using = db_alias()
    now = timezone.now()
    with write_transaction(using):
        records = list(
            TaskRecord.objects.using(using).stale().select_for_update(skip_locked=True)[:limit]
        )
        for record in records:
            lost = record.worker_id
            record.errors = [
                *record.errors,
                error_entry(
                    exc_path=get_module_path(WorkerLost),
                    message=f"worker {lost} stopped renewing its lease (reclaimed by {worker_id})",
                    traceback="", attempt=record.attempts, worker_id=lost,
                ),
            ]
            record.lease_expires_at = None
            if record.cancel_requested:
                record.status, record.finished_at = Status.CANCELLED, now
            elif record.attempts < record.max_attempts:
                record.status, record.run_after = Status.READY, None
            else:
                record.status, record.finished_at = Status.FAILED, now
            record.save(
                using=using,
                update_fields=["errors", "lease_expires_at", "status", "finished_at", "run_after"],
            )
    for record in records:
        log_state(record, f"reclaimed from a lost worker -> {record.status}", logging.WARNING)
    return records


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


def task_cancel(*, task_id: str) -> str | None:
    """Cancel a task: READY ones never run, RUNNING ones are asked to stop.

    Returns the status afterwards (``None`` for an unknown id). A RUNNING task sees the
    request as ``context.cancel_requested``; its timeout stops it otherwise.
    """
    using = db_alias()
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
        elif record.status == Status.RUNNING and not record.cancel_requested:
            record.cancel_requested = True
            record.save(using=using, update_fields=["cancel_requested"])
            log_state(record, "cancel requested")
    return str(record.status)


def task_retry(*, task_ids: Iterable[str]) -> int:
    """Send FAILED or CANCELLED tasks back to READY with a fresh set of attempts."""
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
    for record in records:
        log_state(record, "sent back to the queue by an operator")
    return len(records)


def _update_many(
    using: str,
    *,
    set_fields: Sequence[str],
    where_fields: Sequence[str],
    where_extra: str,
    records: Sequence[TaskRecord],
) -> int:
    """One ``UPDATE`` per record through ``executemany``: the fast path for batches."""
    connection = connections[using]
    quote = connection.ops.quote_name
    meta = TaskRecord._meta
    column = {name: quote(meta.get_field(name).column) for name in (*set_fields, *where_fields)}  # type: ignore[union-attr, arg-type]
    assignments = ", ".join(f"{column[name]} = %s" for name in set_fields)
    conditions = " AND ".join([*(f"{column[n]} = %s" for n in where_fields), where_extra])
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {conditions}"  # noqa: S608
    params = [
        [encode(TaskRecord, name, getattr(r, name), using) for name in set_fields]
        + [encode(TaskRecord, name, getattr(r, name), using) for name in where_fields]
        for r in records
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
        return int(cursor.rowcount)
