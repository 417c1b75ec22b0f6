"""Load without loss on the embedded default: 64 concurrent writers against two daphne
processes and one ``run_executor`` worker, all on one SQLite file, for a fixed number of
messages. No "database is locked" reaches a client; every 200 reply's exchange is stored
(the database holds exactly as many replies as there were 200s, with the same IDs); every
follow-up task the replies enqueued ends SUCCESSFUL; no error-log row."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.scale.support import (
    NO_THROTTLE,
    api_token,
    servers_start,
    servers_stop,
    wait_until,
    worker_start,
)
from tests.servers import GraceServer, project_env

pytestmark = pytest.mark.slow

WRITERS = 64
PER_WRITER = 10  # 640 messages
MESSAGES = ["Hello!", "How do I run the executor worker?", "What is the capital of Mongolia?",
            "What did I say?", "How do I create an API token?"]


async def writers(urls: list[str], token: str) -> list[tuple[int, str]]:
    """Each writer keeps its own conversation on one of the servers; (status, body) each."""
    results: list[tuple[int, str]] = []
    headers = {"Authorization": f"Bearer {token}"}

    async def writer(index: int) -> None:
        async with httpx.AsyncClient(base_url=urls[index % len(urls)], timeout=60,
                                     headers=headers) as client:
            conversation = None
            for turn in range(PER_WRITER):
                body = {"message": MESSAGES[(index + turn) % len(MESSAGES)],
                        "conversation_id": conversation}
                response = await client.post("/api/chat/", json=body)
                results.append((response.status_code, response.text))
                if response.status_code == 200:
                    conversation = response.json()["conversation_id"]

    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    return results


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchall()


def test_sixty_four_writers_two_servers_and_a_worker_lose_nothing(tmp_path: Path) -> None:
    env = {**NO_THROTTLE, "GRACE_LOG_LEVEL": "WARNING", "GRACE_ACCESS_LOG": "false",
           "GRACE_EXECUTOR_RETAIN_FINISHED": "5000"}  # keep every finished task to count
    servers = [GraceServer(tmp_path, env), GraceServer(tmp_path, env, migrate_first=False)]
    servers[0].__enter__()
    worker = None
    try:
        servers_start(servers[1:])
        token = api_token(servers[0].env, "load")
        worker = worker_start(project_env(tmp_path, {**env, "GRACE_LOG_LEVEL": "INFO"}),
                              tmp_path / "worker.log")
        wait_until(lambda: "started: queues=" in worker.log(), 60)
        started = time.monotonic()
        results = asyncio.run(writers([s.url for s in servers], token))
        elapsed = time.monotonic() - started
        db = tmp_path / "db.sqlite3"
        ok = [json.loads(text) for status, text in results if status == 200]
        expected_tasks = 2 * sum("followup_failed" not in r["metadata"]["flags"] for r in ok)
        # The worker finishes every follow-up task the replies enqueued.
        wait_until(lambda: rows(db, "SELECT count(*) FROM executor_taskrecord WHERE status IN "
                                    "('SUCCESSFUL', 'FAILED', 'CANCELLED')")[0][0]
                   >= expected_tasks, 120, 0.5)
        logs = "".join(s.log() for s in servers) + worker.log()
    finally:
        if worker is not None:
            worker.stop()
        servers_stop(servers)

    statuses = Counter(status for status, _ in results)
    assert len(results) == WRITERS * PER_WRITER
    assert not [text for _, text in results if "database is locked" in text]
    assert statuses == {200: WRITERS * PER_WRITER}, statuses
    flags = Counter(flag for r in ok for flag in r["metadata"]["flags"])
    assert "memory_store_failed" not in flags, flags
    stored = {row[0].replace("-", "") for row in rows(
        db, "SELECT id FROM chat_message WHERE role = 'assistant'")}
    assert len(stored) == len(ok)
    assert stored == {r["message_id"].replace("-", "") for r in ok}
    assert rows(db, "SELECT count(*) FROM chat_message WHERE role = 'user'")[0][0] == len(ok)
    tasks = Counter(dict(rows(db, "SELECT status, count(*) FROM executor_taskrecord GROUP BY 1")))
    # A followup that timed out while its transaction was committing reports
    # followup_failed although both of its tasks went in (never one without the other).
    assert set(tasks) == {"SUCCESSFUL"}, tasks
    assert expected_tasks <= tasks["SUCCESSFUL"] <= 2 * len(ok), (tasks, expected_tasks)
    assert tasks["SUCCESSFUL"] % 2 == 0, tasks
    assert rows(db, "SELECT count(*) FROM grace_errorlog")[0][0] == 0
    print(json.dumps({"messages": len(results), "seconds": round(elapsed, 1),
                      "replies_per_s": round(len(results) / elapsed, 1), "flags": flags,
                      "tasks": expected_tasks,
                      "locked_lines_in_logs": logs.count("database is locked")}))
