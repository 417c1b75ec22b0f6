"""Counting what a piece of work asks of the database, for the profiles in bench/.

``SqlCounts().install()`` counts, on every connection of every thread (present and
future), the statements sent (reads and writes, by database alias) and the write
transactions: a commit after writes, or a write in autocommit mode. A statement counts as
a write when any of its ``;``-separated parts starts with INSERT, UPDATE, DELETE or
REPLACE (a ``WITH ... INSERT`` too). Write transactions of the process's own writer threads
(the audit writer, the metrics flusher, the error log's) are counted apart, as
``<alias>, background``: they are not on the request path.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
BACKGROUND_THREADS = ("grace-audit-writer", "grace-metrics-flusher", "grace-errorlog")


def _transaction_key(alias: str) -> str:
    name = threading.current_thread().name
    return f"{alias}, background" if name.startswith(BACKGROUND_THREADS) else alias


def is_write(sql: str) -> bool:
    for part in str(sql).split(";"):
        head = part.lstrip().upper()
        if head.startswith(WRITES) or (head.startswith("WITH") and any(w in head for w in WRITES)):
            return True
    return False


class SqlCounts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reads: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()
        self.write_transactions: Counter[str] = Counter()

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {"reads": dict(self.reads), "writes": dict(self.writes),
                    "write_transactions": dict(self.write_transactions)}

    def reset(self) -> None:
        with self.lock:
            self.reads.clear()
            self.writes.clear()
            self.write_transactions.clear()

    def install(self) -> None:
        from django.db import connections
        from django.db.backends.base.base import BaseDatabaseWrapper
        from django.db.backends.signals import connection_created

        counts = self

        def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            connection = context["connection"]
            alias = connection.alias
            if is_write(sql):
                with counts.lock:
                    counts.writes[alias] += 1
                    if connection.get_autocommit() and not connection.in_atomic_block:
                        counts.write_transactions[_transaction_key(alias)] += 1
                    else:
                        connection._bench_wrote = True
            else:
                with counts.lock:
                    counts.reads[alias] += 1
            return execute(sql, params, many, context)

        def created(sender: Any, connection: Any, **kwargs: Any) -> None:
            if wrapper not in connection.execute_wrappers:
                connection.execute_wrappers.append(wrapper)

        connection_created.connect(created, weak=False)
        for connection in connections.all(initialized_only=True):
            created(None, connection)
        commit, rollback = BaseDatabaseWrapper._commit, BaseDatabaseWrapper._rollback

        def counted_commit(self: Any) -> Any:
            if getattr(self, "_bench_wrote", False):
                self._bench_wrote = False
                with counts.lock:
                    counts.write_transactions[_transaction_key(self.alias)] += 1
            return commit(self)

        def counted_rollback(self: Any) -> Any:
            self._bench_wrote = False
            return rollback(self)

        BaseDatabaseWrapper._commit = counted_commit  # type: ignore[method-assign]
        BaseDatabaseWrapper._rollback = counted_rollback  # type: ignore[method-assign]
