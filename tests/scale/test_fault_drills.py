"""Fault drills on real servers: for each stage and each of ``error``, ``timeout`` and
``hang``, a daphne process started with ``GRACE_FAULTS=<stage>=<mode>`` answers 200,
``degraded``, with the stage's flag and status, within the pipeline deadline plus a small
margin: the first message after start-up and the next one.

The 15 servers start side by side from one migrated SQLite template (copied per server),
with a 2 s deadline and short stage timeouts, so the whole drill takes well under a minute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.scale.support import (
    NO_THROTTLE,
    servers_start,
    servers_stop,
    sqlite_copy,
    sqlite_template,
)
from tests.servers import GraceServer

pytestmark = pytest.mark.slow

STAGE_FLAGS = {
    "inspect": "inspection_skipped",
    "recall": "recall_failed",
    "respond": "response_fallback",
    "store": "memory_store_failed",
    "followup": "followup_failed",
}
MODES = ("error", "timeout", "hang")
DEADLINE = 2.0
MARGIN = 0.75
ENV = {
    **NO_THROTTLE,
    "GRACE_ALLOW_ANONYMOUS": "true",
    "GRACE_PIPELINE_DEADLINE": str(DEADLINE),
    "GRACE_TIMEOUT_INSPECT": "0.4",
    "GRACE_TIMEOUT_RECALL": "0.4",
    "GRACE_TIMEOUT_RESPOND": "1.0",
    "GRACE_TIMEOUT_STORE": "0.4",
    "GRACE_TIMEOUT_FOLLOWUP": "0.4",
    "GRACE_FAULT_HANG_SECONDS": "5",
    "GRACE_LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="module")
def drill_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GraceServer]]:
    root = tmp_path_factory.mktemp("drills")
    template = sqlite_template(root)
    servers = {
        f"{stage}={mode}": GraceServer(
            sqlite_copy(template, root / f"{stage}-{mode}"),
            {**ENV, "GRACE_FAULTS": f"{stage}={mode}"},
            migrate_first=False,
        )
        for stage in STAGE_FLAGS
        for mode in MODES
    }
    servers_start(servers.values())
    try:
        yield servers
    finally:
        servers_stop(servers.values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stage", list(STAGE_FLAGS))
def test_a_real_server_with_a_fault_answers_degraded_in_time(
    drill_servers: dict[str, GraceServer], stage: str, mode: str
) -> None:
    server = drill_servers[f"{stage}={mode}"]
    with httpx.Client(base_url=server.url, timeout=DEADLINE + 10) as client:
        for message in ("How do I run the executor worker?", "Hello!"):
            started = time.monotonic()
            response = client.post("/api/chat/", json={"message": message})
            elapsed = time.monotonic() - started
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["degraded"] is True
            assert STAGE_FLAGS[stage] in body["metadata"]["flags"]
            assert body["metadata"]["stages"][stage] == ("error" if mode == "error" else "timeout")
            others = {s: v for s, v in body["metadata"]["stages"].items() if s != stage}
            assert set(others.values()) <= {"ok"}, others
            assert body["response"]
            assert body["request_id"] == response.headers["x-request-id"]
            assert elapsed < DEADLINE + MARGIN, f"{stage}={mode}: {elapsed:.2f}s"
        health = client.get("/api/health").json()
        assert health["checks"]["faults"]["status"] == "ok"
