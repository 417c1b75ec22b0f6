"""Enqueue: one READY row, within the queue's bound, or ``QueueFull`` and nothing written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections

from executor.compat import Task, get_module_path, normalize_json
from executor.conf import ExecutorOptions, executor_settings
from executor.db import queue_lock, returning_supported, write_transaction
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
    """Insert ``record`` unless its queue holds ``bound`` READY tasks; whether it was
    written (``record.sequence`` is then set). PostgreSQL and SQLite 3.35+: one statement,
    ``INSERT ... SELECT ... WHERE <room> RETURNING``; elsewhere ``SELECT <room>``, then
    ``save()``, in the same transaction."""
    connection = connections[using]
    keys = [record.backend_name, record.queue_name]
    room_params: list[Any] = [*keys, *keys, bound, *keys, bound]
    insert, room = _statements(connection)
    with connection.cursor() as cursor:
        if not returning_supported(connection):
            cursor.execute(room, room_params)
            if not cursor.fetchone()[0]:
                return False
            record.save(using=using, force_insert=True)
            return True
        values = [f.get_db_prep_save(f.pre_save(record, True), connection)
                  for f in _insert_fields()]
        cursor.execute(insert, [*values, *room_params])
        row = cursor.fetchone()
    if row is None:
        return False
    record.sequence = row[0]
    record._state.adding = False
    record._state.db = using
    return True


def _insert_fields() -> list[Any]:
    return [f for f in TaskRecord._meta.concrete_fields if f.name != "sequence"]


_STATEMENTS: dict[str, tuple[str, str]] = {}


def _statements(connection: Any) -> tuple[str, str]:
    """(the bounded insert, the room check alone), built once per database vendor."""
    if connection.vendor not in _STATEMENTS:
        _STATEMENTS[connection.vendor] = _statements_build(connection.ops.quote_name)
    return _STATEMENTS[connection.vendor]


def _statements_build(quote: Any) -> tuple[str, str]:
    """The statements' text.

    Room: sequences only grow, so the span between the lowest and the highest READY
    sequence bounds the count from above. Two index lookups settle most enqueues; ``CASE``
    runs the exact ``COUNT`` (linear in the queue's depth) only when the span reaches the
    bound. Parameters: backend and queue three times, with the bound after the second and
    the third pair.
    """
    table = quote(TaskRecord._meta.db_table)
    where = "status = 'READY' AND backend_name = %s AND queue_name = %s"
    lowest = f"(SELECT sequence FROM {table} WHERE {where} ORDER BY sequence LIMIT 1)"  # noqa: S608
    highest = f"(SELECT sequence FROM {table} WHERE {where} ORDER BY sequence DESC LIMIT 1)"  # noqa: S608
    room = (
        f"CASE WHEN COALESCE({highest} - {lowest} + 1, 0) < %s THEN 1 "  # noqa: S608
        f"WHEN (SELECT COUNT(*) FROM {table} WHERE {where}) < %s THEN 1 ELSE 0 END = 1"
    )
    fields = _insert_fields()
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    insert = (
        f"INSERT INTO {table} ({columns}) SELECT {placeholders} "  # noqa: S608
        f"WHERE {room} RETURNING sequence"
    )
    return insert, f"SELECT {room}"
