"""Every metric Grace records: name, kind, help text and label names.

The core registers its own families here; each app adds its own with ``metric_register``
from ``AppConfig.ready()``. Exposed by ``/api/metrics`` as ``grace_<name>`` (counters with
``_total``). Counters and histograms come from the metrics database (every process adds
to them); gauges are read live when scraped (each app's gauge sources) and sampled once a
minute into the rollups for the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER = "counter"
HISTOGRAM = "histogram"
GAUGE = "gauge"

# Histogram buckets (seconds): requests, stages, tasks and model calls alike.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
INF = "+Inf"


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    raw: bool = False
    """Also kept as raw ``MetricEvent`` rows (with the request ID), for a request's story."""


CATALOG: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("http_requests", COUNTER, "HTTP requests by route, method and status.",
               ("route", "method", "status"), raw=True),
        Metric("http_request_duration_seconds", HISTOGRAM,
               "Seconds to the response (headers, for a stream).", ("route", "method"),
               raw=True),
        Metric("api_errors", COUNTER,
               "Error bodies sent under /api/ by error code and status (exception handlers).",
               ("error", "status")),
        Metric("errors_logged", COUNTER, "Unhandled exceptions written to the error log.",
               ("exception_class",)),
        Metric("tasks_enqueued", COUNTER, "Tasks enqueued.", ("task",)),
        Metric("tasks_finished", COUNTER, "Tasks finished, by status.", ("task", "status")),
        Metric("task_duration_seconds", HISTOGRAM, "Seconds a task's last attempt ran.",
               ("task",), raw=True),
        Metric("task_wait_seconds", HISTOGRAM, "Seconds from enqueue to the first start.",
               ("task",)),
        Metric("ops_failures", COUNTER,
               "Audit appends, event publishes and metric flushes that failed.", ("part",)),
    )
}


def metric_register(metric: Metric) -> None:
    """Add a metric family (idempotent for the same definition; a different one with a
    registered name is a programming error)."""
    known = CATALOG.get(metric.name)
    if known is not None and known != metric:
        raise ValueError(f"metric {metric.name!r} is already registered differently")
    CATALOG[metric.name] = metric


def bucket_for(value: float) -> str:
    """The ``le`` label of the smallest bucket that holds ``value``."""
    for bound in BUCKETS:
        if value <= bound:
            return bucket_label(bound)
    return INF


def bucket_label(bound: float) -> str:
    return f"{bound:g}"
