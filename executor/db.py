"""Transactions that take the write lock up front, and retrying around lock errors.

On SQLite a transaction that begins deferred and then writes fails at once with
"database is locked" when another writer got in first; ``write_transaction`` begins
IMMEDIATE (waiting ``busy_timeout`` for the lock) whatever ``transaction_mode`` the
connection was given. On PostgreSQL it is a plain ``atomic`` block.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, OperationalError, connections, transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")
# First key of the PostgreSQL advisory locks taken per queue on enqueue ("ex").
ADVISORY_CLASS = 0x6578


@contextmanager
def write_transaction(using: str = DEFAULT_DB_ALIAS, *, savepoint: bool = True) -> Iterator[None]:
    """``savepoint=False``: inside a caller's transaction, join it as ``Model.save()`` does
    instead of opening a savepoint. Django names every savepoint anew (``s<thread>_x<n>``,
    ``n`` counting up for the connection's lifetime), so each one is SQL that sqlite3's
    per-connection statement cache has never seen: compiled, cached, and pushing a
    statement still in use out of the cache."""
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic(using=using, savepoint=savepoint):
            yield
        return
    connection.ensure_connection()  # connecting resets transaction_mode from settings
    previous = connection.transaction_mode  # type: ignore[attr-defined]
    connection.transaction_mode = "IMMEDIATE"  # type: ignore[attr-defined]
    try:
        with host_lock(str(connection.settings_dict["NAME"])), transaction.atomic(using=using):
            yield
    finally:
        connection.transaction_mode = previous  # type: ignore[attr-defined]


@contextmanager
def host_lock(database: str) -> Iterator[None]:
    """Queue the executor's SQLite writers on an ``flock`` beside the database file.

    SQLite's busy handler polls with growing sleeps (1, 2, 5, 10 ms...), so two writers
    that collide lose milliseconds per transaction; the kernel hands an ``flock`` over the
    moment it is released. Only an optimisation: without the file, SQLite's own locking
    still keeps every write safe.
    """
    try:
        fd = os.open(f"{database}-executor.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # an in-memory database, a read-only directory
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def returning_supported(connection: Any) -> bool:
    """Whether the executor's one-statement writes (``INSERT``/``UPDATE ... RETURNING``)
    can run here: PostgreSQL, and SQLite 3.35 or newer."""
    return connection.vendor in ("postgresql", "sqlite") and bool(
        connection.features.can_return_columns_from_insert
    )


def advisory_key(backend: str, queue: str) -> tuple[int, int]:
    """The PostgreSQL advisory lock (two keys) that serialises enqueues on one queue."""
    return ADVISORY_CLASS, zlib.crc32(f"{backend}:{queue}".encode()) - 2**31


def queue_lock(*, using: str, backend: str, queue: str) -> None:
    """Serialise enqueues on one queue inside the current transaction (PostgreSQL only).

    SQLite needs nothing more: a write statement holds its one write lock.
    """
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                           list(advisory_key(backend, queue)))


def is_transient(exc: BaseException) -> bool:
    """A lock timeout, busy database, serialization failure or deadlock: try again."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc).lower()
    return any(
        marker in text
        for marker in ("locked", "busy", "deadlock", "could not serialize", "lock timeout")
    )


def with_retries(fn: Callable[[], T], *, what: str, attempts: int = 5) -> T:
    """Run ``fn`` (a whole transaction), again after a short pause on a transient error."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OperationalError as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            logger.warning("%s: %s; retrying (%s/%s)", what, exc, attempt, attempts)
            time.sleep(0.05 * attempt * (1 + random.random()))
    raise AssertionError("unreachable")

