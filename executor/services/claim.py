"""Claim: mark due READY tasks RUNNING for one worker, a batch at a time, in run order.

PostgreSQL: one statement picks the batch (``FOR UPDATE SKIP LOCKED``, so workers on many
hosts take disjoint batches without waiting on each other), marks it and returns the rows.
SQLite (3.35 or newer): the batch's sequence numbers, then one ``UPDATE ... RETURNING``,
inside the ``BEGIN IMMEDIATE`` transaction. Elsewhere: the ORM, row by row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import F
from django.utils import timezone

from executor.db import returning_supported, write_transaction
from executor.models import Status, TaskRecord
from executor.services.common import db_alias

# What a claim writes; ``{t}`` qualifies a column, ``{append}`` adds to ``worker_ids``.
_SET = (
    "status = 'RUNNING', attempts = {t}attempts + 1, worker_id = %s, "
    "worker_ids = {append}, lease_expires_at = %s, "
    "started_at = COALESCE({t}started_at, %s), last_attempted_at = %s"
)


def task_claim(
    *, worker_id: str, backend: str, queues: Iterable[str], limit: int, lease_seconds: float
) -> list[TaskRecord]:
    """Mark up to ``limit`` due READY tasks RUNNING for this worker; them, in run order."""
    using = db_alias()
    with write_transaction(using):
        return claim_rows(using, worker_id=worker_id, backend=backend, queues=queues,
                          limit=limit, lease_seconds=lease_seconds)


def claim_rows(
    using: str, *, worker_id: str, backend: str, queues: Iterable[str], limit: int,
    lease_seconds: float,
) -> list[TaskRecord]:
    """Inside a write transaction: the claimed rows as they are now, in run order."""
    if limit <= 0:
        return []
    connection = connections[using]
    now = timezone.now()
    lease = now + timedelta(seconds=lease_seconds)
    if connection.vendor == "postgresql":
        records = _claim_postgresql(using, worker_id=worker_id, backend=backend,
                                    queues=list(queues), limit=limit, lease=lease, now=now)
    else:
        sequences = list(
            TaskRecord.objects.using(using)
            .claimable(backend=backend, queues=queues)
            .select_for_update(skip_locked=True)
            .values_list("sequence", flat=True)[:limit]
        )
        if not sequences:
            return []
        if returning_supported(connection):  # SQLite 3.35+
            records = _claim_sqlite(using, sequences, worker_id=worker_id, lease=lease, now=now)
        else:
            return _claim_orm(using, sequences, worker_id=worker_id, lease=lease, now=now)
    records.sort(key=lambda r: (-r.priority, r.sequence))  # claimable()'s order
    return records


def _returning(connection: Any, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(
        f"{prefix}{connection.ops.quote_name(f.column)}"
        for f in TaskRecord._meta.concrete_fields
    )


def _raw(using: str, sql: str, params: Sequence[Any]) -> list[TaskRecord]:
    """Run a statement that returns whole rows; the rows as records (fields converted)."""
    return list(TaskRecord.objects.raw(sql, params).using(using))


def _claim_postgresql(
    using: str, *, worker_id: str, backend: str, queues: list[str], limit: int,
    lease: datetime, now: datetime,
) -> list[TaskRecord]:
    connection = connections[using]
    table = connection.ops.quote_name(TaskRecord._meta.db_table)
    assignments = _SET.format(t="t.", append="t.worker_ids || jsonb_build_array(%s::text)")
    sql = (
        f"UPDATE {table} AS t SET {assignments} "  # noqa: S608
        f"FROM (SELECT sequence FROM {table} WHERE status = 'READY' AND backend_name = %s "
        "AND queue_name = ANY(%s) AND (run_after IS NULL OR run_after <= %s) "
        "ORDER BY priority DESC, sequence LIMIT %s FOR UPDATE SKIP LOCKED) AS c "
        f"WHERE t.sequence = c.sequence RETURNING {_returning(connection, 't')}"
    )
    return _raw(using, sql, [worker_id, worker_id, lease, now, now,
                             backend, queues, now, limit])


def _claim_sqlite(
    using: str, sequences: list[int], *, worker_id: str, lease: datetime, now: datetime
) -> list[TaskRecord]:
    connection = connections[using]
    adapt = connection.ops.adapt_datetimefield_value
    table = connection.ops.quote_name(TaskRecord._meta.db_table)
    assignments = _SET.format(t="", append="json_insert(worker_ids, '$[#]', %s)")
    marks = ", ".join(["%s"] * len(sequences))
    sql = (
        f"UPDATE {table} SET {assignments} "  # noqa: S608
        f"WHERE status = 'READY' AND sequence IN ({marks}) RETURNING {_returning(connection)}"
    )
    return _raw(using, sql, [worker_id, worker_id, adapt(lease), adapt(now), adapt(now),
                             *sequences])


def _claim_orm(
    using: str, sequences: list[int], *, worker_id: str, lease: datetime, now: datetime
) -> list[TaskRecord]:
    rows = TaskRecord.objects.using(using).filter(sequence__in=sequences)
    for record in rows.only("sequence", "worker_ids", "started_at"):
        TaskRecord.objects.using(using).filter(sequence=record.sequence).update(
            status=Status.RUNNING, attempts=F("attempts") + 1, worker_id=worker_id,
            worker_ids=[*record.worker_ids, worker_id], lease_expires_at=lease,
            started_at=record.started_at or now, last_attempted_at=now,
        )
    found = TaskRecord.objects.using(using).in_bulk(sequences)
    return [found[s] for s in sequences if s in found]
