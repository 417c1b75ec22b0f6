"""Shared fixtures.

Tests run against SQLite files (one per test process, see grace/settings.py), so
WAL and several connections behave as in production. Code that writes from its own
thread (the error log, pipeline stages) needs ``django_db(transaction=True)``: a
plain ``django_db`` test holds the write lock in its open transaction.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.servers import GraceServer

pytest_plugins = ["tests.chat.llm_fixtures"]  # the model tests' servers and backends

REQUIRE_SERVICES = os.environ.get("GRACE_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes"}


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


@pytest.fixture
def grace_server(tmp_path: Path):
    """Factory: ``with grace_server({"GRACE_FAULTS": "respond=error"}) as server: ...``."""

    def start(env: dict[str, str] | None = None, **kwargs) -> GraceServer:
        return GraceServer(tmp_path, env, **kwargs)

    return start
