"""Enqueue: READY rows, within the queue's bound, or ``QueueFull`` and nothing written
(several tasks: all or none, one statement per queue; their SQL is in
``executor.services.enqueue_sql``).

The bound holds under concurrent enqueuers because the room check and the insert are one
serialised write, one ``INSERT ... SELECT ... WHERE <room> RETURNING`` statement, one round
trip, alone (autocommit: no ``BEGIN``/``COMMIT``) or inside a caller's transaction, which
it joins. On SQLite the statement takes the database's write lock before it reads. On
PostgreSQL ``<room>`` is ``executor_queue_room(...)`` (a PL/pgSQL function, migration
0002): it takes the queue's advisory lock (held until the transaction ends), then counts
with a snapshot of its own taken once the lock is held, using plans it keeps for the
session. Elsewhere (no ``RETURNING``): the check, then ``save()``, in a write transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.utils import timezone

from executor.compat import Task, get_module_path, normalize_json
from executor.conf import ExecutorOptions, executor_settings
from executor.db import host_lock, queue_lock, returning_supported, write_transaction
from executor.exceptions import QueueFull
from executor.models import TaskRecord, task_id_new
from executor.services.common import db_alias, log_state
from executor.services.enqueue_sql import (
    READY_CONSTANTS,
    insert_statement,
    room_params,
    statements,
)


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

    The room check and the insert are one serialised write (see the module's docstring),
    so concurrent enqueues never pass the bound.
    """
    return tasks_enqueue(
        backend=backend, options=options, calls=[(task, args, kwargs)], request_id=request_id
    )[0]


def tasks_enqueue(
    *,
    backend: str,
    options: ExecutorOptions,
    calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]],
    request_id: str | None,
) -> list[TaskRecord]:
    """Insert one READY task per ``(task, args, kwargs)``, all or none: ``QueueFull`` (for
    the first queue without room for all of its tasks) having written nothing.

    The tasks of one queue go in with one statement: one room check (room for all of
    them), one lock, one round trip. Tasks of several queues: one such statement per queue
    (in the order of the queues' names), within one transaction.
    """
    using = db_alias()
    records = [_record_for(backend, options, task, args, kwargs, request_id)
               for task, args, kwargs in calls]
    queues: dict[str, list[TaskRecord]] = {}
    for record in records:
        queues.setdefault(record.queue_name, []).append(record)
    if len(queues) == 1:
        if not _queue_insert(using, records, options.max_pending):
            raise QueueFull(records[0].queue_name, options.max_pending,
                            executor_settings.RETRY_AFTER)
    else:  # a savepoint: a full queue rolls back the others' rows, not a caller's work
        with write_transaction(using):
            for queue in sorted(queues):
                if not _queue_insert(using, queues[queue], options.max_pending):
                    raise QueueFull(queue, options.max_pending, executor_settings.RETRY_AFTER)
    _log_enqueued(records)
    return records


def _log_enqueued(records: list[TaskRecord]) -> None:
    for record in records:
        # DEBUG: the row records the enqueue (with the request ID), and the enqueuing
        # request has its own access line; at INFO this line was a sixth of an enqueue's cost.
        log_state(record, "enqueued", logging.DEBUG, priority=record.priority)


def _record_for(
    backend: str,
    options: ExecutorOptions,
    task: Task,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    request_id: str | None,
) -> TaskRecord:
    payload = normalize_json({"args": list(args), "kwargs": kwargs})
    timeout = getattr(task, "timeout", None) or options.default_timeout
    max_attempts = getattr(task, "max_attempts", None) or options.max_attempts
    return _record_new(
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


def _queue_insert(using: str, records: list[TaskRecord], bound: int) -> bool:
    """Insert ``records`` (of one queue) if the queue has room for all of them; whether
    they were written. Inside a caller's transaction the insert joins it without a
    savepoint, like ``Model.objects.create``; the caller raises ``QueueFull`` after it, so
    a caller that catches it keeps a usable transaction."""
    connection = connections[using]
    first = records[0]
    if not returning_supported(connection):
        with write_transaction(using, savepoint=False):
            queue_lock(using=using, backend=first.backend_name, queue=first.queue_name)
            return _check_then_save(using, records, bound)
    if connection.vendor == "sqlite" and not connection.in_atomic_block:
        with host_lock(str(connection.settings_dict["NAME"])):  # queue behind the workers
            return _insert_within_bound(using, records, bound)
    # PostgreSQL, or inside a caller's transaction (SQLite): one statement
    return _insert_within_bound(using, records, bound)


def _record_new(**values: Any) -> TaskRecord:
    """A READY record with these values and every other field at its default, built
    positionally (Django's fast path: no default looked up field by field)."""
    defaults: dict[str, Any] = {
        "sequence": None, "id": task_id_new(), "enqueued_at": timezone.now(),
        **{name: value for name, (value, _) in READY_CONSTANTS.items()},
    }
    defaults.update(values)
    return TaskRecord(*(defaults[name] for name in _FIELD_NAMES))  # type: ignore[misc]


_FIELD_NAMES = [f.attname for f in TaskRecord._meta.concrete_fields]


def _check_then_save(using: str, records: list[TaskRecord], bound: int) -> bool:
    """Without ``RETURNING``: ``SELECT <room>``, then ``save()`` (in a write transaction)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(statements(connection)[1], room_params(records[0], bound, len(records)))
        if not cursor.fetchone()[0]:
            return False
    for record in records:
        record.save(using=using, force_insert=True)
    return True


def _insert_within_bound(using: str, records: list[TaskRecord], bound: int) -> bool:
    """Insert ``records`` (of one queue) unless it lacks room for all of them; whether
    they were written (each ``record.sequence`` is then set). One statement
    (``insert_statement``)."""
    connection = connections[using]
    sql, params = insert_statement(connection, records, bound)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return _inserted(using, records, rows)


def _inserted(using: str, records: list[TaskRecord], rows: Sequence[Sequence[Any]]) -> bool:
    """Apply what the insert returned (``sequence, id`` per row written) to ``records``:
    whether they were written."""
    if not rows:
        return False
    sequences = {task_id: sequence for sequence, task_id in rows}
    for record in records:
        record.sequence = sequences[record.id]
        record._state.adding = False
        record._state.db = using
    return True


@dataclass
class EnqueueStatement:
    """The bounded insert of some tasks as a statement for the caller to run within its
    own transaction (``tasks_enqueue_statement``), then ``tasks_enqueued``."""

    sql: str
    params: list[Any]
    records: list[TaskRecord]
    using: str
    options: ExecutorOptions


def tasks_enqueue_statement(
    *,
    backend: str,
    options: ExecutorOptions,
    calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]],
    request_id: str | None,
) -> EnqueueStatement | None:
    """``tasks_enqueue``'s insert, not run: the caller runs it as one statement of its own
    write transaction (in a batch of statements it sends at once, say) and hands the rows
    it returned to ``tasks_enqueued``. The queue's lock (PostgreSQL) is held from the
    statement to the caller's commit, as for an enqueue inside a caller's transaction.
    None where there is no such one statement: tasks of several queues, a database
    without ``RETURNING``."""
    using = db_alias()
    connection = connections[using]
    records = [_record_for(backend, options, task, args, kwargs, request_id)
               for task, args, kwargs in calls]
    if not records or not returning_supported(connection) or len(
        {record.queue_name for record in records}
    ) > 1:
        return None
    sql, params = insert_statement(connection, records, options.max_pending)
    return EnqueueStatement(sql, params, records, using, options)


def tasks_enqueued(statement: EnqueueStatement, rows: Sequence[Sequence[Any]]) -> list[TaskRecord]:
    """The records the statement wrote, given the rows it returned; ``QueueFull`` when it
    wrote none (the queue had no room for all of them)."""
    records = statement.records
    if not _inserted(statement.using, records, rows):
        raise QueueFull(records[0].queue_name, statement.options.max_pending,
                        executor_settings.RETRY_AFTER)
    _log_enqueued(records)
    return records
