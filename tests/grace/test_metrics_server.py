"""Operations in a real server process (daphne on fresh SQLite files): the scrape counts
what the test sent, the audit chain it wrote verifies, and a drill with the audit log,
the event bus and the metrics store all hanging leaves replies untouched."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.grace.ops_support import manage_run
from tests.timing import limit

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
    # Four exchanges; the eight tasks' state changes are in their rows, not the chain
    # (docs/operations.md, "What is audited").
    assert entries == 4


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
            assert elapsed < limit(2.0), f"a reply took {elapsed:.2f}s during the drill"
        started = time.monotonic()
        health = client.get("/api/health")
        assert health.status_code == 200 and time.monotonic() - started < limit(3.0)
        assert health.json()["checks"]["operations"]["audit"]["pending"] >= 5
        started = time.monotonic()
        assert client.get("/api/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
                          ).status_code == 200
        # The scrape does not wait for a stuck flush, only its own 1 s for the flush.
        assert time.monotonic() - started < 1.0 + limit(2.0)


WRITE_SCRIPT = """
import time
from grace.metrics.buffer import metric_record, metrics_flush
time.sleep(max(0.0, {start} - time.time()))
for round_no in range(20):
    for i in range(50):
        labels = {{"route": "r", "method": "GET"}}
        metric_record("http_requests", labels={{**labels, "status": 200}})
        metric_record("http_request_duration_seconds", 0.2, labels=labels)
    assert metrics_flush(10.0)
"""


@pytest.fixture
def pg_metrics_env(postgres_url, tmp_path):
    """Default database on SQLite, the metrics database on a fresh PostgreSQL database."""
    from tests.servers import migrate, project_env, scratch_postgres_database

    with scratch_postgres_database(postgres_url, "grace_metrics") as url:
        env = project_env(tmp_path, {"GRACE_METRICS_DATABASE_URL": url})
        migrate(env)
        yield env, url.replace("postgres://", "postgresql://")


def test_processes_flushing_at_once_add_up_on_postgresql(pg_metrics_env):
    import psycopg

    from tests.grace.ops_support import manage_popen

    env, url = pg_metrics_env
    start = time.time() + 4.0
    procs = [manage_popen(env, "shell", "-c", WRITE_SCRIPT.format(start=start))
             for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    with psycopg.connect(url) as db:
        totals = dict(db.execute(
            "SELECT labels, count FROM metrics_metrictotal WHERE name = 'http_requests'"
        ).fetchall())
        rollups = db.execute(
            "SELECT sum(count), max(peak) FROM metrics_metricrollup "
            "WHERE name = 'http_request_duration_seconds'"
        ).fetchone()
    assert totals == {'{"method":"GET","route":"r","status":"200"}': 3 * 20 * 50}
    assert rollups == (3 * 20 * 50, 0.2)
