"""What the service modules share: the log line per state change, error entries, backoff,
and batched ``UPDATE`` statements for the worker's hot path."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connections, router
from django.utils import timezone

from executor.conf import ExecutorOptions
from executor.models import TaskRecord

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


@dataclass
class AttemptResult:
    """How one attempt ended, as the worker saw it."""

    record: TaskRecord
    ok: bool
    return_value: Any = None
    error: dict[str, Any] | None = None
    finished_at: datetime = field(default_factory=timezone.now)


def update_many(
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
    names = (*set_fields, *where_fields)
    fields = [meta.get_field(name) for name in names]
    assignments = ", ".join(f"{quote(name)} = %s" for name in set_fields)
    conditions = " AND ".join([*(f"{quote(n)} = %s" for n in where_fields), where_extra])
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {conditions}"  # noqa: S608
    params = [
        [f.get_db_prep_save(getattr(r, n), connection) for f, n in zip(fields, names, strict=True)]  # type: ignore[union-attr]
        for r in records
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
        return int(cursor.rowcount)
