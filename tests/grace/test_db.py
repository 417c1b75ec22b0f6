"""SQLite pragmas on every connection of every alias; the metrics router."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from django.db import connections
from django.db.utils import ConnectionHandler

from grace.metrics.models import MetricEvent
from grace.models import ErrorLog
from grace.routers import MetricsRouter
from tests.servers import migrate, project_env

EXPECTED = {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1, "synchronous": 1}


def pragmas(alias: str) -> dict[str, object]:
    with connections[alias].cursor() as cursor:
        values = {}
        for name in EXPECTED:
            cursor.execute(f"PRAGMA {name}")
            values[name] = cursor.fetchone()[0]
    return values


@pytest.mark.sqlite_only("SQLite pragmas")
@pytest.mark.django_db(databases=["default", "metrics"])
@pytest.mark.parametrize("alias", ["default", "metrics"])
def test_pragmas_on_each_alias(alias):
    assert connections[alias].vendor == "sqlite"
    assert pragmas(alias) == EXPECTED


@pytest.mark.sqlite_only("SQLite pragmas")
@pytest.mark.django_db(transaction=True, databases=["default", "metrics"])
@pytest.mark.parametrize("alias", ["default", "metrics"])
def test_pragmas_on_a_connection_opened_in_another_thread(alias):
    seen: dict[str, object] = {}
    connections[alias].ensure_connection()
    main_connection = connections[alias].connection
    assert main_connection is not None

    def work() -> None:
        try:
            seen.update(pragmas(alias))
            seen["connection"] = connections[alias].connection
        finally:
            connections[alias].close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert seen.pop("connection") is not main_connection  # its own connection
    assert seen == EXPECTED


@pytest.mark.sqlite_only("SQLite busy_timeout pragma")
@pytest.mark.django_db(transaction=True)
def test_busy_timeout_follows_the_setting(settings):
    settings.GRACE = {**settings.GRACE, "SQLITE_BUSY_TIMEOUT_MS": 1234}
    connections["default"].close()
    assert pragmas("default")["busy_timeout"] == 1234


def test_postgresql_connections_are_left_alone(postgres_url, django_db_blocker):
    """A non-SQLite connection gets no PRAGMA (PostgreSQL would reject it as a syntax error)."""
    import dj_database_url

    handler = ConnectionHandler({"default": dj_database_url.parse(postgres_url)})
    connection = handler["default"]
    executed: list[str] = []

    def spy(execute, sql, params, many, context):
        executed.append(sql)
        return execute(sql, params, many, context)

    with django_db_blocker.unblock():
        try:
            with connection.execute_wrapper(spy):
                connection.ensure_connection()  # fires connection_created
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    assert cursor.fetchone() == (1,)
        finally:
            handler.close_all()
    assert connection.vendor == "postgresql"
    assert executed == ["SELECT 1"]


def test_router_sends_metrics_to_metrics_only():
    router = MetricsRouter()
    assert router.db_for_read(MetricEvent) == "metrics"
    assert router.db_for_write(MetricEvent) == "metrics"
    assert router.db_for_write(ErrorLog) == "default"
    assert router.allow_migrate("metrics", "metrics") is True
    assert router.allow_migrate("default", "metrics") is False
    for app in ("grace", "chat", "executor", "auth", "contenttypes", "admin", "sessions"):
        assert router.allow_migrate("default", app) is True
        assert router.allow_migrate("metrics", app) is False


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


@pytest.mark.slow
def test_migrate_puts_each_table_in_its_database(tmp_path):
    migrate(project_env(tmp_path))
    default, metrics = _tables(tmp_path / "db.sqlite3"), _tables(tmp_path / "metrics.sqlite3")
    assert "metrics_metricevent" in metrics
    assert "metrics_metricevent" not in default
    assert "grace_errorlog" in default and "auth_user" in default
    app_tables = {t for t in metrics if not t.startswith(("django_migrations", "sqlite_"))}
    assert all(t.startswith("metrics_") for t in app_tables), app_tables
    for path in (tmp_path / "db.sqlite3", tmp_path / "metrics.sqlite3"):
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_writers_of_a_process_queue_on_one_lock():
    """The store and the audit writer take turns on SQLite's one writer: a second writer
    waits for the first (up to its timeout), then goes; on PostgreSQL nobody waits.

    On the metrics database: nothing else in the test process takes its lock (the audit
    writer or a stage left by an earlier test may hold the default database's)."""
    from grace.db import sqlite_writes_serialized

    sqlite = connections["metrics"].vendor == "sqlite"
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with sqlite_writes_serialized("metrics", timeout=5) as taken:
            assert taken
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(5)
    with sqlite_writes_serialized("metrics", timeout=0.05) as taken:
        assert taken is (not sqlite)  # SQLite: still held by the first writer
    release.set()
    thread.join(5)
    with sqlite_writes_serialized("metrics", timeout=0.05) as taken:
        assert taken
