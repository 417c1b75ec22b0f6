"""The queue's gauges and their metric families."""

from __future__ import annotations

import pytest

from executor.metrics import QUEUE_METRICS, queue_gauges
from executor.services import task_claim
from grace.metrics.buffer import gauges_read
from grace.metrics.catalog import CATALOG
from tests.executor import tasks


def by_queue(gauges: list[tuple[str, dict[str, str], float]]) -> dict[tuple[str, str], float]:
    return {(name, labels["queue"]): value for name, labels, value in gauges
            if name.startswith("queue_")}


@pytest.mark.django_db
def test_gauges_per_queue(executor_options) -> None:
    assert queue_gauges() == []
    tasks.noop.enqueue()
    tasks.noop.enqueue()
    tasks.noop.using(queue_name="other").enqueue()
    task_claim(worker_id="w1", backend="default", queues=["default"], limit=1,
               lease_seconds=30)
    gauges = by_queue(queue_gauges())
    assert gauges[("queue_ready", "default:default")] == 1
    assert gauges[("queue_running", "default:default")] == 1
    assert gauges[("queue_ready", "default:other")] == 1
    assert gauges[("queue_running", "default:other")] == 0
    assert 0 <= gauges[("queue_oldest_ready_age_seconds", "default:other")] < 60


@pytest.mark.django_db
def test_the_gauges_and_their_families_are_registered(executor_options) -> None:
    for metric in QUEUE_METRICS:
        assert CATALOG[metric.name] == metric
    tasks.noop.enqueue()
    assert by_queue(gauges_read())[("queue_ready", "default:default")] == 1
