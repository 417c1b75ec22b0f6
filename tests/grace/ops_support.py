"""Helpers and fixtures of the operations tests (audit, events, metrics, features, admin)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chat.conftest import quick_chat
from tests.servers import ROOT


@pytest.fixture
def ops_chat(settings: Any) -> Iterator[Any]:
    """Anonymous chat, no throttles, short timeouts, tasks run at once, no faults."""
    # Stage threads close their connections: a PostgreSQL test database can be dropped.
    with quick_chat(settings, STAGE_CONN_MAX_AGE=0) as configured:
        yield configured


@pytest.fixture
def seeded_rules(ops_chat: Any) -> Any:
    """``ops_chat`` plus the starter knowledge and Hunter's seeded rules; the settings."""
    from chat.ingest import knowledge_seed
    from chat.security import rule_cache
    from chat.security_seed import security_rules_seed

    knowledge_seed()
    security_rules_seed()
    rule_cache.clear()
    return ops_chat


async def async_connections_closed() -> None:
    """Close the connections the async ORM opened in asgiref's sync thread (nothing else
    closes them: a PostgreSQL test database could then not be dropped at teardown)."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


async def chat_post(client: Any, message: str, **headers: str) -> Any:
    return await client.post(
        "/api/chat/", data=json.dumps({"message": message}),
        content_type="application/json", headers=headers,
    )


def new_request_id() -> str:
    return f"test-{uuid.uuid4().hex[:20]}"


def manage_run(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``manage.py`` in a child process; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def manage_popen(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def sqlite_path(tmp: Path) -> Path:
    return tmp / "db.sqlite3"
