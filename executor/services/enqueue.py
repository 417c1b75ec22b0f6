"""Enqueue: one READY row, within the queue's bound, or ``QueueFull`` and nothing written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections

from executor.compat import Task, get_module_path, normalize_json
from executor.conf import ExecutorOptions, executor_settings
from executor.db import queue_lock, write_transaction
from executor.exceptions import QueueFull
from executor.models import TaskRecord
from executor.services.common import db_alias, log_state


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
    # Inside a caller's transaction (a reply's follow-ups, say) the insert joins it without
    # a savepoint, like ``Model.objects.create``; ``QueueFull`` is raised after the block, so
    # a caller that catches it keeps a usable transaction.
    record = TaskRecord(
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
    with write_transaction(using, savepoint=False):
        queue_lock(using=using, backend=backend, queue=task.queue_name)
        written = _insert_within_bound(using, record, options.max_pending)
    if not written:
        raise QueueFull(task.queue_name, options.max_pending, executor_settings.RETRY_AFTER)
    log_state(record, "enqueued", priority=record.priority)
    return record


def _insert_within_bound(using: str, record: TaskRecord, bound: int) -> bool:
    """Insert ``record`` unless its queue holds ``bound`` READY tasks: one statement
    (``INSERT ... SELECT ... WHERE ... RETURNING``) on PostgreSQL and SQLite 3.35+, the
    check then ``save()`` elsewhere. Whether it was written (``record.sequence`` is set).
    The check is ``_pending_at_least``'s in SQL: ``CASE`` runs the exact ``COUNT`` only
    when the span of READY sequences reaches the bound.
    """
    connection = connections[using]
    table = connection.ops.quote_name(TaskRecord._meta.db_table)
    where = "status = 'READY' AND backend_name = %s AND queue_name = %s"
    keys = [record.backend_name, record.queue_name]
    if connection.vendor not in ("postgresql", "sqlite") or not (
        connection.features.can_return_columns_from_insert
    ):
        if _pending_at_least(using, record.backend_name, record.queue_name, bound):
            return False
        record.save(using=using, force_insert=True)
        return True
    fields = [f for f in TaskRecord._meta.concrete_fields if f.name != "sequence"]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(record, True), connection) for f in fields]
    placeholders = ", ".join(["%s"] * len(values))
    lowest = f"(SELECT sequence FROM {table} WHERE {where} ORDER BY sequence LIMIT 1)"  # noqa: S608
    highest = f"(SELECT sequence FROM {table} WHERE {where} ORDER BY sequence DESC LIMIT 1)"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {placeholders} "  # noqa: S608
            f"WHERE CASE WHEN COALESCE({highest} - {lowest} + 1, 0) < %s THEN 1 "
            f"WHEN (SELECT COUNT(*) FROM {table} WHERE {where}) < %s THEN 1 "
            "ELSE 0 END = 1 RETURNING sequence",
            [*values, *keys, *keys, bound, *keys, bound],
        )
        row = cursor.fetchone()
    if row is None:
        return False
    record.sequence = row[0]
    record._state.adding = False
    record._state.db = using
    return True


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


