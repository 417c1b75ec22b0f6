"""SQLite pragmas, set on every new connection of every alias.

Django opens a connection per thread (the ASGI handler runs each sync view in a
thread of its own), so pragmas set once at start-up would hold for one connection
only; ``connection_created`` fires for each of them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.dispatch import receiver


def sqlite_pragmas() -> dict[str, str]:
    return {
        "journal_mode": "WAL",
        "busy_timeout": str(settings.SQLITE_BUSY_TIMEOUT_MS),
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
