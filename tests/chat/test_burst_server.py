"""The burst of issue 14's finding 1, against a real server: 450 websocket messages of
4,000 ``<`` from one account (30 sockets at once, throttles off) while a second user sends
messages holding an AWS key. Every message answered was inspected in full, the second
user is answered, and no table of the server's database, no task argument and no line of
its log holds the key."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.grace.ops_support import manage_run
from tests.servers import GraceServer
from tests.timing import limit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.sqlite_only("the server runs on its own SQLite files on either engine"),
]

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
VERDICTS = {"ok", "flagged", "blocked", "redacted"}


def token_create(server: GraceServer, username: str) -> str:
    created = manage_run(server.env, "create_api_token", username, "--create-user")
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


async def conversation(server: GraceServer, token: str, messages: list[str]) -> list[dict]:
    """Send each message once the previous one is answered; every final frame."""
    url = server.url.replace("http://", "ws://") + "/ws/chat/"
    finals = []
    async with websockets.connect(
        url,
        additional_headers={"Origin": server.url, "Authorization": f"Bearer {token}"},
        subprotocols=["grace.v1"],  # type: ignore[list-item]
        max_size=None,
    ) as socket:
        for message in messages:
            await socket.send(json.dumps({"type": "message", "message": message}))
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), limit(60)))
                if frame["type"] in ("done", "error"):
                    finals.append(frame)
                    break
    return finals


def raw_secret_locations(database: Path, secret: str) -> list[str]:
    found = []
    with sqlite3.connect(database) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            if table.startswith("sqlite_") or "_fts" in table:
                continue
            for column in db.execute(f'PRAGMA table_info("{table}")'):
                name = column[1]
                count = db.execute(
                    f'SELECT COUNT(*) FROM "{table}" WHERE CAST("{name}" AS TEXT) LIKE ?',  # noqa: S608
                    (f"%{secret}%",),
                ).fetchone()[0]
                if count:
                    found.append(f"{table}.{name}")
    return found


def test_a_burst_from_one_account_leaves_nothing_uninspected_and_no_secret_kept(tmp_path):
    env = {"GRACE_THROTTLE_USER": "off", "GRACE_THROTTLE_ANON": "off"}
    with GraceServer(tmp_path, env) as server:
        attacker, victim = token_create(server, "mallory"), token_create(server, "alice")

        async def burst() -> tuple[list[Any], list[dict]]:
            attacks = [
                conversation(server, attacker, ["<" * 4000] * 15) for _ in range(30)
            ]
            asked = [f"Why does boto3 refuse my key {AWS_KEY}? (try {i})" for i in range(10)]
            return await asyncio.gather(*attacks), await conversation(server, victim, asked)

        attack_results, victim_results = asyncio.run(burst())
        log = server.log()

    finals = [frame for frames in attack_results for frame in frames]
    assert len(finals) == 450
    answered = [frame for frame in finals if frame["type"] == "done"]
    refused = [frame for frame in finals if frame["type"] == "error"]
    assert {(f["status"], f["error"]) for f in refused} <= {(503, "busy")}, refused[:3]
    assert answered, "nothing of the burst was answered"
    for frame in answered:
        assert frame["metadata"]["stages"]["inspect"] in VERDICTS, frame["metadata"]
        assert "inspection_skipped" not in frame["metadata"]["flags"]
    assert [f["type"] for f in victim_results] == ["done"] * 10, victim_results
    assert {f["metadata"]["stages"]["inspect"] for f in victim_results} == {"redacted"}
    assert all(AWS_KEY not in f["response"] for f in victim_results)
    # Stored: messages, titles, knowledge gaps, task arguments... none holds the key.
    assert raw_secret_locations(tmp_path / "db.sqlite3", AWS_KEY) == []
    assert raw_secret_locations(tmp_path / "metrics.sqlite3", AWS_KEY) == []
    assert AWS_KEY not in log
    # Positive control of the scan: the masked messages are there.
    assert raw_secret_locations(tmp_path / "db.sqlite3", "[REDACTED:secret]")
