"""The ``queue`` entry of ``/api/health``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from executor.health import queue_health
from executor.models import Status, TaskRecord
from executor.services import task_claim
from grace.health import health_checks
from tests.executor import tasks


@pytest.mark.django_db
def test_an_old_queue_is_stale_yet_ok(executor_options, settings) -> None:
    settings.EXECUTOR = {**getattr(settings, "EXECUTOR", {}), "HEALTH_QUEUE_MAX_AGE": 60}
    assert queue_health() == {"status": "ok", "ready": 0, "running": 0,
                              "oldest_ready_age": None, "stale": False}
    tasks.noop.enqueue()
    tasks.noop.enqueue()
    tasks.noop.using(queue_name="other").enqueue()
    task_claim(worker_id="w1", backend="default", queues=["default"], limit=1,
               lease_seconds=30)
    fresh = queue_health()
    assert (fresh["ready"], fresh["running"], fresh["stale"]) == (2, 1, False)
    assert "warning" not in fresh
    TaskRecord.objects.filter(status=Status.READY).update(
        enqueued_at=timezone.now() - timedelta(seconds=120))
    old = queue_health()
    assert old["status"] == "ok" and old["stale"] is True
    assert 120 <= old["oldest_ready_age"] < 180
    assert "over 60s" in old["warning"] and "run_executor" in old["warning"]


@pytest.mark.django_db(transaction=True, databases=["default", "metrics"])  # checks: threads
def test_health_reports_the_queue(executor_options, client) -> None:
    assert health_checks()["queue"] is queue_health
    tasks.noop.enqueue()
    body = client.get("/api/health").json()
    assert body["checks"]["queue"]["status"] == "ok"
    assert body["checks"]["queue"]["ready"] == 1
