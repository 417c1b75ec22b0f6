"""SQLite pragmas, set on every new connection of every alias; inserts in steps.

Django opens a connection per thread (the ASGI handler runs each sync view in a
thread of its own), so pragmas set once at start-up would hold for one connection
only; ``connection_created`` fires for each of them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.models import Model
from django.dispatch import receiver

from grace.ops_conf import ops_settings

M = TypeVar("M", bound=Model)
STEP_MAX = 256


def sqlite_pragmas() -> dict[str, str]:
    return {
        "journal_mode": "WAL",
        "busy_timeout": str(ops_settings.SQLITE_BUSY_TIMEOUT_MS),
        "foreign_keys": "ON",
        "synchronous": "NORMAL",
    }


@receiver(connection_created, dispatch_uid="grace.db.sqlite_pragmas")
def set_sqlite_pragmas(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        for name, value in sqlite_pragmas().items():
            cursor.execute(f"PRAGMA {name} = {value}")


def bulk_create_in_steps(manager: Any, rows: Sequence[M]) -> list[M]:
    """``manager.bulk_create(rows)`` in batches of power-of-two sizes (at most 256, and
    within the database's parameter limit).

    A multi-row ``INSERT`` is a statement of its own for each row count, and sqlite3 keeps
    up to 128 compiled statements per connection: a writer that inserts whatever count has
    queued up compiles a new, large statement for each count and filled its connection's
    cache with megabytes of them (the audit writer: 2-3 MB, measured with
    ``sqlite3_db_status``). In steps there are at most nine shapes, each compiled once.
    """
    created: list[M] = []
    if not rows:
        return created
    # The database's own limit (SQLite: 999 parameters per statement), as a power of two.
    fields = rows[0]._meta.concrete_fields
    limit = connections[manager.db].ops.bulk_batch_size(fields, rows) or STEP_MAX
    largest = 1 << (min(STEP_MAX, limit).bit_length() - 1)
    start = 0
    while start < len(rows):
        size = min(largest, 1 << ((len(rows) - start).bit_length() - 1))
        created.extend(manager.bulk_create(rows[start : start + size]))
        start += size
    return created


_sqlite_write_locks: dict[str, threading.Lock] = {}
_sqlite_write_locks_guard = threading.Lock()


@contextmanager
def sqlite_writes_serialized(using: str = "default", *, timeout: float) -> Iterator[bool]:
    """On SQLite, let one thread of this process write to ``using`` at a time.

    SQLite has one writer per file; a thread that finds it busy waits in SQLite's busy
    handler, which sleeps up to 100 ms between retries, while every other writer queues
    behind it. Writers that take this lock first (the reply pipeline's store, the audit
    writer) queue on a lock that wakes them at once instead. Yields whether the lock was
    taken: after ``timeout`` seconds the caller goes on without it (SQLite's own locking
    still keeps the write safe) or gives up, as it chooses. Other engines: yields True at
    once."""
    if connections[using].vendor != "sqlite":
        yield True
        return
    with _sqlite_write_locks_guard:
        lock = _sqlite_write_locks.setdefault(using, threading.Lock())
    taken = lock.acquire(timeout=max(0.0, timeout))
    try:
        yield taken
    finally:
        if taken:
            lock.release()
