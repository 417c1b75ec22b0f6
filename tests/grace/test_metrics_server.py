"""Operations in a real server process (daphne on fresh SQLite files): the scrape counts
what the test sent, the audit chain it wrote verifies, and a drill with the audit log,
the event bus and the metrics store all hanging leaves replies untouched."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.grace.ops_support import manage_run

pytestmark = pytest.mark.slow

TOKEN = "scrape-token-for-tests"  # noqa: S105
ENV = {
    "GRACE_ALLOW_ANONYMOUS": "true",
    "GRACE_THROTTLE_ANON": "off",
    "GRACE_METRICS_TOKEN": TOKEN,
    "GRACE_METRICS_FLUSH_SECONDS": "0.2",
}


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(f"{url}/api/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_real_server_counts_requests_and_keeps_a_valid_audit_chain(grace_server):
    with grace_server(ENV) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(4):
            response = client.post("/api/chat/", json={"message": "How do I run the worker?"})
            assert response.status_code == 200
        assert client.get("/api/nothing-here").status_code == 404
        found = scrape(server.url)
        chat = frozenset({("route", "api/chat/"), ("method", "POST"), ("status", "200")})
        assert found[("grace_http_requests_total", chat)] == 4
        assert found[("grace_chat_replies_total",
                      frozenset({("backend", "fallback"), ("degraded", "false")}))] == 4
        assert found[("grace_api_errors_total",
                      frozenset({("error", "not_found"), ("status", "404")}))] == 1
        ready = [v for (name, _), v in found.items() if name == "grace_queue_ready"]
        assert sum(ready) == 8  # two follow-up tasks per reply wait for a worker
        health = client.get("/api/health").json()["checks"]
        assert health["channel_layer"]["status"] == "ok"
        assert health["queue"]["ready"] == 8 and health["queue"]["stale"] is False
        assert health["model_backend"]["backend"] == "fallback"
        # A worker process runs the tasks; what it records shows in the web's scrape.
        worker = manage_run(server.env, "run_executor", "--burst", "--concurrency", "2")
        assert worker.returncode == 0, worker.stderr[-2000:]
        found = scrape(server.url)
        for task in ("learning_capture", "causal_track"):
            done = frozenset({("task", task), ("status", "SUCCESSFUL")})
            assert found[("grace_tasks_finished_total", done)] == 4
            assert found[("grace_task_duration_seconds_count", frozenset({("task", task)}))] == 4
        assert sum(v for (name, _), v in found.items() if name == "grace_queue_ready") == 0
    done = manage_run(server.env, "verify_audit_log")
    assert done.returncode == 0, done.stderr
    entries = int(done.stdout.split("intact: ")[1].split(" ")[0])
    assert entries == 4 + 8 * 3  # four exchanges; eight tasks enqueued, started, finished


def test_drill_with_audit_events_and_metrics_hanging(grace_server):
    env = {**ENV, "GRACE_FAULTS": "audit=hang,events=hang,metrics=hang",
           "GRACE_FAULT_HANG_SECONDS": "30"}
    with grace_server(env) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(5):
            started = time.monotonic()
            response = client.post("/api/chat/", json={"message": "How do I run the worker?"})
            elapsed = time.monotonic() - started
            assert response.status_code == 200
            assert response.json()["degraded"] is False
            assert elapsed < 2.0, f"a reply took {elapsed:.2f}s during the drill"
        started = time.monotonic()
        health = client.get("/api/health")
        assert health.status_code == 200 and time.monotonic() - started < 3.0
        assert health.json()["checks"]["operations"]["audit"]["pending"] >= 5
        started = time.monotonic()
        assert client.get("/api/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
                          ).status_code == 200
        assert time.monotonic() - started < 3.0  # the scrape does not wait for a stuck flush
