"""Enqueue: one READY row, within the queue's bound, or ``QueueFull`` and nothing written.

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

from django.db import connections, models
from django.utils import timezone

from executor.compat import Task, get_module_path, normalize_json
from executor.conf import ExecutorOptions, executor_settings
from executor.db import (
    advisory_key,
    host_lock,
    queue_lock,
    returning_supported,
    write_transaction,
)
from executor.exceptions import QueueFull
from executor.models import Status, TaskRecord, task_id_new
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


# What every new task holds in these fields: written into the insert as SQL constants, not
# parameters (fewer values for the driver to adapt, and psycopg keeps a statement's parsed
# form only for up to 50 parameters, which two tasks' worth of parameters would pass).
_READY_CONSTANTS: dict[str, tuple[Any, str]] = {
    "status": (Status.READY, "'READY'"),
    "started_at": (None, "NULL"),
    "last_attempted_at": (None, "NULL"),
    "finished_at": (None, "NULL"),
    "attempts": (0, "0"),
    "worker_id": ("", "''"),
    "worker_ids": ([], "'[]'"),
    "lease_expires_at": (None, "NULL"),
    "cancel_requested": (False, "FALSE"),
    "return_value": (None, "NULL"),
    "errors": ([], "'[]'"),
}


def _record_new(**values: Any) -> TaskRecord:
    """A READY record with these values and every other field at its default, built
    positionally (Django's fast path: no default looked up field by field)."""
    defaults: dict[str, Any] = {
        "sequence": None, "id": task_id_new(), "enqueued_at": timezone.now(),
        **{name: value for name, (value, _) in _READY_CONSTANTS.items()},
    }
    defaults.update(values)
    return TaskRecord(*(defaults[name] for name in _FIELD_NAMES))  # type: ignore[misc]


_FIELD_NAMES = [f.attname for f in TaskRecord._meta.concrete_fields]


def _check_then_save(using: str, records: list[TaskRecord], bound: int) -> bool:
    """Without ``RETURNING``: ``SELECT <room>``, then ``save()`` (in a write transaction)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(_statements(connection)[1], _room_params(records[0], bound, len(records)))
        if not cursor.fetchone()[0]:
            return False
    for record in records:
        record.save(using=using, force_insert=True)
    return True


def _room_params(record: TaskRecord, bound: int, rows: int = 1) -> list[Any]:
    """Room for ``rows`` more: fewer than ``bound - rows + 1`` READY tasks."""
    keys = [record.backend_name, record.queue_name]
    bound = bound - rows + 1
    return [*keys, *keys, bound, *keys, bound]


def _insert_within_bound(using: str, records: list[TaskRecord], bound: int) -> bool:
    """Insert ``records`` (of one queue) unless it lacks room for all of them; whether
    they were written (each ``record.sequence`` is then set). One statement
    (``_insert_statement``)."""
    connection = connections[using]
    sql, params = _insert_statement(connection, records, bound)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return _inserted(using, records, rows)


def _insert_statement(
    connection: Any, records: list[TaskRecord], bound: int
) -> tuple[str, list[Any]]:
    """``INSERT ... SELECT ... WHERE <room> RETURNING sequence, id`` for ``records`` (of
    one queue), and its parameters. On PostgreSQL the room is ``executor_queue_room(...)``
    (migration 0002), which takes the queue's advisory lock first. Several rows: the room
    is checked once, for all of them (see ``_statement_rows``)."""
    first = records[0]
    room: list[Any]
    if connection.vendor == "postgresql":
        room = [*advisory_key(first.backend_name, first.queue_name),
                first.backend_name, first.queue_name, bound - len(records) + 1]
    else:
        room = _room_params(first, bound, len(records))
    values = [value for record in records for value in _insert_values(record, connection)]
    if len(records) == 1:
        return _statements(connection)[0], [*values, *room]
    return _statement_rows(connection, len(records)), [*room, *values]


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
    sql, params = _insert_statement(connection, records, options.max_pending)
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


def _insert_fields() -> list[Any]:
    return _INSERT_FIELDS


_INSERT_FIELDS = [f for f in TaskRecord._meta.concrete_fields if f.name != "sequence"]
_PARAM_FIELDS = [f for f in _INSERT_FIELDS if f.attname not in _READY_CONSTANTS]


# Fields whose values the database driver cannot take as they are: JSON is encoded and
# datetimes adapted by the field. Strings, numbers, booleans and None pass through (what
# ``get_db_prep_save`` would return for them anyway, at a tenth of the cost per enqueue).
_PREPARED_BY_FIELD = [isinstance(f, models.JSONField | models.DateTimeField)
                      for f in _PARAM_FIELDS]


def _insert_values(record: TaskRecord, connection: Any) -> list[Any]:
    """The parameters of one task's row (the fields that are not ``_READY_CONSTANTS``)."""
    values = []
    for field, by_field in zip(_PARAM_FIELDS, _PREPARED_BY_FIELD, strict=True):
        value = getattr(record, field.attname)
        if by_field and value is not None:
            value = field.get_db_prep_save(value, connection)
        values.append(value)
    return values


def _row_sql(cast: Any = None) -> str:
    """One row's values: a placeholder per parameter, the constants as SQL; each wrapped
    in ``cast(field, sql)`` when given."""
    parts = []
    for field in _insert_fields():
        constant = _READY_CONSTANTS.get(field.attname)
        sql = "%s" if constant is None else constant[1]
        parts.append(cast(field, sql) if cast else sql)
    return ", ".join(parts)


_STATEMENTS: dict[str, tuple[str, str]] = {}


def _statements(connection: Any) -> tuple[str, str]:
    """(the bounded insert, the room check alone: plain SQL, run under ``queue_lock``),
    built once per database vendor."""
    if connection.vendor not in _STATEMENTS:
        _STATEMENTS[connection.vendor] = _statements_build(
            connection.ops.quote_name, postgresql=connection.vendor == "postgresql")
    return _STATEMENTS[connection.vendor]


def _statements_build(quote: Any, *, postgresql: bool = False) -> tuple[str, str]:
    """The statements' text.

    Room: sequences only grow, so the span between the lowest and the highest READY
    sequence bounds the count from above. Two index lookups settle most enqueues; ``CASE``
    runs the exact ``COUNT`` (linear in the queue's depth) only when the span reaches the
    bound. Parameters: backend and queue three times, with the bound after the second and
    the third pair.

    PostgreSQL: the room is ``executor_queue_room(lock class, lock key, backend, queue,
    bound)``, the same check in PL/pgSQL (migration 0002) after the queue's advisory lock,
    with plans kept for the session: as plain SQL, planning the check took about as much
    server time as the rest of the insert (0.2 ms per enqueue, Django binds client-side).
    """
    table = quote(TaskRecord._meta.db_table)
    where = "status = 'READY' AND backend_name = %s AND queue_name = %s"
    lowest = f"(SELECT sequence FROM {table} WHERE {where} ORDER BY sequence LIMIT 1)"  # noqa: S608
    highest = f"(SELECT sequence FROM {table} WHERE {where} ORDER BY sequence DESC LIMIT 1)"  # noqa: S608
    room = (
        f"CASE WHEN COALESCE({highest} - {lowest} + 1, 0) < %s THEN 1 "  # noqa: S608
        f"WHEN (SELECT COUNT(*) FROM {table} WHERE {where}) < %s THEN 1 ELSE 0 END = 1"
    )
    columns = ", ".join(quote(f.column) for f in _insert_fields())
    insert_room = "executor_queue_room(%s, %s, %s, %s, %s)" if postgresql else room
    insert = (
        f"INSERT INTO {table} ({columns}) SELECT {_row_sql()} "  # noqa: S608
        f"WHERE {insert_room} RETURNING sequence, id"
    )
    return insert, f"SELECT {room}"


_STATEMENTS_ROWS: dict[tuple[str, int], str] = {}


def _statement_rows(connection: Any, rows: int) -> str:
    """The bounded insert of ``rows`` tasks at once: the room (for all of them) is taken
    once, in a ``MATERIALIZED`` common table expression, so that the check and the lock
    happen once and no row is checked against its fellows. Parameters: the room's (as in
    ``_statements``), then each row's values. PostgreSQL types each value with a cast (a
    ``VALUES`` list would otherwise type a column of NULLs as text)."""
    key = (connection.vendor, rows)
    if key not in _STATEMENTS_ROWS:
        quote = connection.ops.quote_name
        if connection.vendor == "postgresql":
            room = "executor_queue_room(%s, %s, %s, %s, %s)"
            placeholders = _row_sql(
                lambda field, sql: f"CAST({sql} AS {field.cast_db_type(connection)})")
        else:
            room = _statements(connection)[1].removeprefix("SELECT ")
            placeholders = _row_sql()
        table = quote(TaskRecord._meta.db_table)
        columns = ", ".join(quote(f.column) for f in _insert_fields())
        values = ", ".join([f"({placeholders})"] * rows)
        _STATEMENTS_ROWS[key] = (
            f"WITH room AS MATERIALIZED (SELECT {room} AS ok) "  # noqa: S608
            f"INSERT INTO {table} ({columns}) SELECT v.* FROM room, (VALUES {values}) AS v "
            "WHERE room.ok RETURNING sequence, id"
        )
    return _STATEMENTS_ROWS[key]
