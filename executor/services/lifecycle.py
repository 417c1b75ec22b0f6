"""A worker's writes: complete (with the next claim), release, heartbeat, reclaim stale
leases. The claim itself is in executor/services/claim.py.

Complete runs once per batch, so its statements are written for speed: one ``UPDATE`` for
a batch of successes (PostgreSQL) or one ``executemany`` (elsewhere).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from executor.compat import get_module_path, task_finished
from executor.conf import ExecutorOptions
from executor.db import write_transaction
from executor.exceptions import WorkerLost
from executor.models import Status, TaskRecord
from executor.services.claim import claim_rows
from executor.services.common import (
    AttemptResult,
    db_alias,
    error_entry,
    log_state,
    logger,
    retry_delay,
    update_many,
)
from executor.signals import task_signal_send


def task_complete_and_claim(
    *,
    worker_id: str,
    results: Sequence[AttemptResult],
    options: ExecutorOptions,
    backend: str,
    queues: Iterable[str],
    limit: int,
    lease_seconds: float,
) -> tuple[list[TaskRecord], list[TaskRecord]]:
    """Record finished attempts, then claim the next batch (``task_claim``), in one write
    transaction: (completed, claimed). Sends ``task_finished`` for each finished task.

    A busy worker writes results and takes its next batch with a single lock acquisition.
    """
    using = db_alias()
    with write_transaction(using):
        completed, written = _complete_rows(using, worker_id=worker_id, results=results,
                                            options=options)
        claimed = claim_rows(using, worker_id=worker_id, backend=backend, queues=queues,
                             limit=limit, lease_seconds=lease_seconds)
    _completed_report(completed, written)
    return completed, claimed


def _complete_rows(
    using: str, *, worker_id: str, results: Sequence[AttemptResult], options: ExecutorOptions
) -> tuple[list[TaskRecord], int]:
    """Record finished attempts; failed ones retry while attempts remain.

    A row is only written while this worker still holds it (same worker, same attempt):
    a late result for a task that was reclaimed meanwhile is dropped.
    """
    if not results:
        return [], 0
    records = []
    failed = [o.record.sequence for o in results if not o.ok]
    cancelled = set(
        TaskRecord.objects.using(using)
        .filter(sequence__in=failed, cancel_requested=True)
        .values_list("sequence", flat=True)
    ) if failed else set()
    for result in results:
        record = result.record
        record.lease_expires_at = None
        if result.ok:
            record.status = Status.SUCCESSFUL
            record.return_value = result.return_value
            record.finished_at = result.finished_at
        else:
            record.errors = [*record.errors, result.error]
            if record.sequence in cancelled:
                record.cancel_requested = True
                record.status = Status.CANCELLED
                record.finished_at = result.finished_at
            elif record.attempts < record.max_attempts:
                record.status = Status.READY
                delay = retry_delay(attempt=record.attempts, options=options)
                record.run_after = result.finished_at + timedelta(seconds=delay)
            else:
                record.status = Status.FAILED
                record.finished_at = result.finished_at
        records.append(record)
    succeeded = [r for r in records if r.status == Status.SUCCESSFUL]
    written = _mark_succeeded(using, succeeded)
    written += update_many(
        using,
        set_fields=(
            "status", "return_value", "errors", "finished_at", "run_after",
            "lease_expires_at", "cancel_requested",
        ),
        where_fields=("sequence", "worker_id", "attempts"),
        where_extra="status = 'RUNNING'",
        records=[r for r in records if r.status != Status.SUCCESSFUL],
    )
    return records, written


def _completed_report(records: Sequence[TaskRecord], written: int) -> None:
    """A log line per state change; ``task_finished`` for each finished task."""
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
    for record in records:
        if record.is_finished:
            task_signal_send(task_finished, record)


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
        written = update_many(
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
        if record.is_finished:
            task_signal_send(task_finished, record)
    return records


def _mark_succeeded_postgresql(connection: Any, table: str, records: Sequence[TaskRecord]) -> int:
    """PostgreSQL: the whole batch in one ``UPDATE ... FROM unnest(...)`` (one statement to
    parse and plan instead of one per task)."""
    encoder = TaskRecord._meta.get_field("return_value").encoder  # type: ignore[attr-defined]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS t SET status = 'SUCCESSFUL', return_value = v.result::jsonb, "  # noqa: S608
            "finished_at = v.finished, lease_expires_at = NULL "
            "FROM unnest(%s::bigint[], %s::text[], %s::integer[], %s::text[], "
            "%s::timestamptz[]) AS v(seq, worker, attempts, result, finished) "
            "WHERE t.sequence = v.seq AND t.worker_id = v.worker AND t.attempts = v.attempts "
            "AND t.status = 'RUNNING'",
            [
                [r.sequence for r in records],
                [r.worker_id for r in records],
                [r.attempts for r in records],
                [None if r.return_value is None else json.dumps(r.return_value, cls=encoder)
                 for r in records],
                [r.finished_at for r in records],
            ],
        )
        return int(cursor.rowcount)


def _mark_succeeded(using: str, records: Sequence[TaskRecord]) -> int:
    """The common case, written lean: status, result and finish time, lease dropped."""
    if not records:
        return 0
    connection = connections[using]
    adapt = connection.ops.adapt_datetimefield_value
    result = TaskRecord._meta.get_field("return_value")
    table = connection.ops.quote_name(TaskRecord._meta.db_table)
    if connection.vendor == "postgresql":
        return _mark_succeeded_postgresql(connection, table, records)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET status = 'SUCCESSFUL', return_value = %s, "  # noqa: S608
            "finished_at = %s, lease_expires_at = NULL "
            "WHERE sequence = %s AND worker_id = %s AND attempts = %s AND status = 'RUNNING'",
            [
                [result.get_db_prep_save(r.return_value, connection),  # type: ignore[union-attr]
                 adapt(r.finished_at), r.sequence, r.worker_id, r.attempts]
                for r in records
            ],
        )
        return int(cursor.rowcount)
