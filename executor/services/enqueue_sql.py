"""The enqueue's SQL, built once per database vendor: the bounded insert of one task or
of several (one room check for all of them), and the room check alone. See
``executor.services.enqueue`` for how they keep the bound."""

from __future__ import annotations

from typing import Any

from django.db import models

from executor.db import advisory_key
from executor.models import Status, TaskRecord

# What every new task holds in these fields: written into the insert as SQL constants, not
# parameters (fewer values for the driver to adapt, and psycopg keeps a statement's parsed
# form only for up to 50 parameters, which two tasks' worth of parameters would pass).
READY_CONSTANTS: dict[str, tuple[Any, str]] = {
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


def room_params(record: TaskRecord, bound: int, rows: int = 1) -> list[Any]:
    """Room for ``rows`` more: fewer than ``bound - rows + 1`` READY tasks."""
    keys = [record.backend_name, record.queue_name]
    bound = bound - rows + 1
    return [*keys, *keys, bound, *keys, bound]


def insert_statement(
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
        room = room_params(first, bound, len(records))
    values = [value for record in records for value in _insert_values(record, connection)]
    if len(records) == 1:
        return statements(connection)[0], [*values, *room]
    return _statement_rows(connection, len(records)), [*room, *values]


def _insert_fields() -> list[Any]:
    return _INSERT_FIELDS


_INSERT_FIELDS = [f for f in TaskRecord._meta.concrete_fields if f.name != "sequence"]
_PARAM_FIELDS = [f for f in _INSERT_FIELDS if f.attname not in READY_CONSTANTS]


# Fields whose values the database driver cannot take as they are: JSON is encoded and
# datetimes adapted by the field. Strings, numbers, booleans and None pass through (what
# ``get_db_prep_save`` would return for them anyway, at a tenth of the cost per enqueue).
_PREPARED_BY_FIELD = [isinstance(f, models.JSONField | models.DateTimeField)
                      for f in _PARAM_FIELDS]


def _insert_values(record: TaskRecord, connection: Any) -> list[Any]:
    """The parameters of one task's row (the fields that are not ``READY_CONSTANTS``)."""
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
        constant = READY_CONSTANTS.get(field.attname)
        sql = "%s" if constant is None else constant[1]
        parts.append(cast(field, sql) if cast else sql)
    return ", ".join(parts)


_STATEMENTS: dict[str, tuple[str, str]] = {}


def statements(connection: Any) -> tuple[str, str]:
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
    ``statements``), then each row's values. PostgreSQL types each value with a cast (a
    ``VALUES`` list would otherwise type a column of NULLs as text)."""
    key = (connection.vendor, rows)
    if key not in _STATEMENTS_ROWS:
        quote = connection.ops.quote_name
        if connection.vendor == "postgresql":
            room = "executor_queue_room(%s, %s, %s, %s, %s)"
            placeholders = _row_sql(
                lambda field, sql: f"CAST({sql} AS {field.cast_db_type(connection)})")
        else:
            room = statements(connection)[1].removeprefix("SELECT ")
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
