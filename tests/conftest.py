"""Shared fixtures.

Tests run against SQLite files (one per test process, see grace/settings.py), so
WAL and several connections behave as in production. Code that writes from its own
thread (the error log, pipeline stages) needs ``django_db(transaction=True)``: a
plain ``django_db`` test holds the write lock in its open transaction.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.servers import GraceServer

pytest_plugins = ["tests.chat.llm_fixtures"]  # the model tests' servers and backends

REQUIRE_SERVICES = os.environ.get("GRACE_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes"}


def database_vendor() -> str:
    """``sqlite`` or ``postgresql``: the engine of the test run's default database."""
    from django.conf import settings

    engine = str(settings.DATABASES["default"]["ENGINE"])
    return "sqlite" if engine.endswith("sqlite3") else engine.rsplit(".", 1)[-1]


def database_url(alias: str = "default") -> str:
    """A URL of this run's database ``alias`` (the test database once it is set up), for
    child processes (workers, servers) that must share it."""
    from urllib.parse import quote

    from django.conf import settings

    db = settings.DATABASES[alias]
    if str(db["ENGINE"]).endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = quote(str(db.get("USER") or ""), safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(str(db["PASSWORD"]), safe="")
    host = f"{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
    return f"postgres://{auth}@{host}/{db['NAME']}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.sqlite_only("why")`` tests skip, with that reason, on another engine."""
    vendor = database_vendor()
    if vendor == "sqlite":
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            why = marker.args[0] if marker.args else "SQLite-specific"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only ({why}); this run: {vendor}"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """PostgreSQL: drop this run's test databases when pytest-django could not (a thread of
    the app still held a connection); they are named after this process (grace/settings)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return
    try:
        import psycopg

        with psycopg.connect(url.replace("postgres://", "postgresql://", 1),
                             autocommit=True, connect_timeout=3) as admin:
            for stem in ("db", "metrics"):
                admin.execute(f'DROP DATABASE IF EXISTS "test_grace_{os.getpid()}_{stem}" '
                              "WITH (FORCE)")
    except Exception as exc:  # never turn a finished run into an error
        print(f"\ncould not drop this run's PostgreSQL test databases: {exc}")


def service_unavailable(reason: str) -> None:
    """Skip a test whose service is unreachable; in CI (GRACE_REQUIRE_SERVICES) fail it."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("GRACE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        with psycopg.connect(url.replace("postgres://", "postgresql://"), connect_timeout=3):
            pass
    except Exception as exc:
        service_unavailable(f"PostgreSQL at {url} is not reachable: {exc}")
    return url


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("GRACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:
        service_unavailable(f"Redis at {url} is not reachable: {exc}")
    return url


@pytest.fixture(params=["memory", "redis"])
def layer(request: pytest.FixtureRequest, settings: object) -> str:
    """The test on the in-memory channel layer (one process) and on channels-redis (a
    prefix of its own); ``@pytest.mark.parametrize("layer", ["memory"], indirect=True)``
    picks one."""
    if request.param == "memory":
        settings.CHANNEL_LAYERS = {  # type: ignore[attr-defined]
            "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
        }
    else:
        url = request.getfixturevalue("redis_url")
        settings.CHANNEL_LAYERS = {  # type: ignore[attr-defined]
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [url], "prefix": f"grace-test-{uuid.uuid4().hex[:8]}"},
            }
        }
    return str(request.param)


@pytest.fixture
def grace_server(tmp_path: Path):
    """Factory: ``with grace_server({"GRACE_FAULTS": "respond=error"}) as server: ...``."""

    def start(env: dict[str, str] | None = None, **kwargs) -> GraceServer:
        return GraceServer(tmp_path, env, **kwargs)

    return start
