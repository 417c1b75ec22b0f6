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
    with write_transaction(using, savepoint=False):
        queue_lock(using=using, backend=backend, queue=task.queue_name)
        full = _pending_at_least(using, backend, task.queue_name, options.max_pending)
        record = None if full else TaskRecord.objects.using(using).create(
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
    if record is None:
        raise QueueFull(task.queue_name, options.max_pending, executor_settings.RETRY_AFTER)
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


