"""The queue's gauges: READY and RUNNING tasks and the oldest READY task's age, per queue.

Registered from ``ExecutorConfig.ready()``: the metric families with the core's catalog
and ``queue_gauges`` as a gauge source, read live when ``/api/metrics`` is scraped and
sampled once a minute into the rollups for the dashboard.
"""

from __future__ import annotations

from executor.selectors import queue_figures
from grace.metrics.catalog import GAUGE, Metric

QUEUE_METRICS = (
    Metric("queue_ready", GAUGE, "READY tasks (due or deferred).", ("queue",)),
    Metric("queue_running", GAUGE, "RUNNING tasks.", ("queue",)),
    Metric("queue_oldest_ready_age_seconds", GAUGE, "Age of the oldest READY task.",
           ("queue",)),
)


def queue_gauges() -> list[tuple[str, dict[str, str], float]]:
    """``(metric, {"queue": "<backend>:<queue>"}, value)`` for each queue, read now."""
    gauges: list[tuple[str, dict[str, str], float]] = []
    for row in queue_figures():
        labels = {"queue": f"{row['backend_name']}:{row['queue_name']}"}
        age = row["oldest_ready_age"]
        gauges.append(("queue_ready", labels, float(row["ready"])))
        gauges.append(("queue_running", labels, float(row["running"])))
        gauges.append(("queue_oldest_ready_age_seconds", labels, float(age or 0.0)))
    return gauges
