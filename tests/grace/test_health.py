"""GET /api/health: each database checked; a failing or hung check gives a bounded 503."""

from __future__ import annotations

import threading
import time

import pytest

from grace.health import health_register, health_unregister
from tests.grace.support import assert_error, wait_for
from tests.timing import limit, wait_until

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "metrics"])


@pytest.fixture
def extra_check():
    names: list[str] = []

    def register(name, check):
        names.append(name)
        health_register(name, check)

    yield register
    for name in names:
        health_unregister(name)


@pytest.mark.sqlite_only("asserts the embedded default's vendor; tests/scale checks PostgreSQL")
def test_healthy_checks_each_database(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response["X-Request-ID"]
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) >= {"database:default", "database:metrics"}
    for name, result in body["checks"].items():  # operations add channel_layer, queue, ...
        assert result["status"] == "ok"
        assert result.get("vendor") == "sqlite" or not name.startswith("database:")


def test_failing_check_is_503_naming_it(client, extra_check):
    extra_check("queue", lambda: {"status": "error", "error": "too old"})

    def broken():
        raise ConnectionError("refused")

    extra_check("model", broken)
    body = assert_error(client.get("/api/health"), 503, "unhealthy")
    assert "model" in body["message"] and "queue" in body["message"]
    assert "database" not in body["message"]
    by_check = {d["check"]: d for d in body["details"]}
    assert by_check["model"]["error"] == "ConnectionError: refused"
    assert by_check["queue"]["error"] == "too old"


def test_hung_check_is_bounded_by_the_health_timeout(client, settings, extra_check):
    settings.GRACE = {**settings.GRACE, "HEALTH_TIMEOUT": 0.5}
    release = threading.Event()

    def hung():
        release.wait(30)
        return {"status": "ok"}

    extra_check("hung", hung)
    try:
        started = time.monotonic()
        first = client.get("/api/health")
        elapsed = time.monotonic() - started
        body = assert_error(first, 503, "unhealthy")
        assert elapsed < 0.5 + limit(2.5), elapsed  # the 0.5 s bound, a generous margin
        (detail,) = body["details"]
        assert detail["check"] == "hung" and "timed out" in detail["error"]
        # Still hung: the next round shares the run in progress instead of starting
        # another thread, and is bounded the same way.
        started = time.monotonic()
        second = assert_error(client.get("/api/health"), 503, "unhealthy")
        assert time.monotonic() - started < 0.5 + limit(2.5)
        assert "timed out" in second["details"][0]["error"]
        hung_threads = [t for t in threading.enumerate() if t.name == "grace-health-hung"]
        assert len(hung_threads) == 1
    finally:
        release.set()
    # Released, the check finishes and the next round runs it again: healthy.
    assert wait_for(lambda: client.get("/api/health").status_code == 200, timeout=5)


def test_concurrent_rounds_share_one_run_of_each_check(extra_check, monkeypatch):
    """Many polls at once (a load balancer under load) run each check once, not N times."""
    from concurrent.futures import ThreadPoolExecutor

    from grace import health
    from grace.health import health_collect

    calls = []
    gate = threading.Event()
    joined = []  # the runs of "slow" the rounds got, to open the gate once all 8 have one
    run_for = health._run_for

    def spy(name, check):
        run = run_for(name, check)
        if name == "slow":
            joined.append(run)
        return run

    def slow():
        calls.append(1)
        gate.wait(limit(5))
        return {"status": "ok"}

    extra_check("slow", slow)
    monkeypatch.setattr(health, "_run_for", spy)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(health_collect, timeout=limit(5)) for _ in range(8)]
        wait_until(lambda: len(joined) == 8, timeout=5, message="8 rounds asked for the check")
        gate.set()
        results = [f.result() for f in futures]
    assert all(r["slow"]["status"] == "ok" for r in results)
    assert all(r["database:default"]["status"] == "ok" for r in results)
    assert len(calls) == 1  # every round overlapped the first run and shared it


def test_health_is_healthy_again_once_the_check_recovers(client, extra_check):
    state = {"ok": False}
    extra_check("flaky", lambda: {"status": "ok" if state["ok"] else "error"})
    assert client.get("/api/health").status_code == 503
    state["ok"] = True
    assert client.get("/api/health").status_code == 200
