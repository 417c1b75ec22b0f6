"""``GET /api/metrics``: the Prometheus text format, written by prometheus_client.

Counters and histograms are the running totals in the metrics database (every process
adds to them, so one scrape of any web process sees the whole deployment); gauges are
read at scrape time. Before answering, this process's buffer is flushed (bounded by
``SCRAPE_FLUSH_SECONDS``), so a scrape counts the requests that came before it.

Who may scrape: a staff user (session) or ``Authorization: Bearer $GRACE_METRICS_TOKEN``.
"""

from __future__ import annotations

import hmac
import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse

from grace.api import api, errors
from grace.errors import error_response
from grace.features import dependency_problem, feature_enabled
from grace.metrics.buffer import gauges_read, metrics_flush, metrics_state
from grace.metrics.catalog import BUCKETS, CATALOG, COUNTER, GAUGE, HISTOGRAM, INF, bucket_label
from grace.metrics.models import MetricTotal
from grace.ops_conf import ops_settings
from grace.routers import METRICS_DB

SCRAPE_FLUSH_SECONDS = 1.0
PREFIX = "grace_"


class DatabaseCollector:
    """A prometheus_client collector over ``MetricTotal`` and the live gauges."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        grouped: dict[str, list[tuple[dict[str, str], int, float]]] = defaultdict(list)
        stored = (
            MetricTotal.objects.using(METRICS_DB)
            .order_by("name", "labels")
            .values_list("name", "labels", "count", "total")
        )
        for stored_name, stored_labels, stored_count, stored_total in stored:
            grouped[stored_name].append((json.loads(stored_labels), stored_count, stored_total))
        for name, metric in CATALOG.items():
            rows = grouped.get(name, [])
            if metric.kind == COUNTER:
                counter = CounterMetricFamily(PREFIX + name, metric.help, labels=metric.labels)
                for labels, _count, total in rows:
                    counter.add_metric([labels.get(k, "") for k in metric.labels], total)
                yield counter
            elif metric.kind == HISTOGRAM:
                histogram = HistogramMetricFamily(PREFIX + name, metric.help, labels=metric.labels)
                for key, (buckets, total) in _histograms(metric.labels, rows).items():
                    histogram.add_metric(list(key), buckets, sum_value=total)
                yield histogram
        gauges: dict[str, Any] = {}
        for gauge_name, gauge_labels, value in gauges_read():
            metric = CATALOG[gauge_name]
            if metric.kind != GAUGE:
                continue
            if gauge_name not in gauges:
                gauges[gauge_name] = GaugeMetricFamily(
                    PREFIX + gauge_name, metric.help, labels=metric.labels
                )
            gauges[gauge_name].add_metric([gauge_labels.get(k, "") for k in metric.labels], value)
        yield from gauges.values()
        state = metrics_state()
        buffered = GaugeMetricFamily(
            PREFIX + "metrics_buffered", "Measurements waiting in this process's buffer."
        )
        buffered.add_metric([], state["buffered"])
        yield buffered
        dropped = CounterMetricFamily(
            PREFIX + "metrics_dropped", "Measurements this process dropped (buffer full)."
        )
        dropped.add_metric([], state["dropped"])
        yield dropped


def _histograms(
    names: tuple[str, ...], rows: list[tuple[dict[str, str], int, float]]
) -> dict[tuple[str, ...], tuple[list[tuple[str, float]], float]]:
    """Per label set: cumulative ``(le, count)`` buckets and the sum."""
    counts: dict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, count, total in rows:
        key = tuple(labels.get(k, "") for k in names)
        le = labels.get("le", INF)
        counts[key][le] = counts[key].get(le, 0) + count
        sums[key] += total
    result = {}
    for key, per_bucket in counts.items():
        running, buckets = 0, []
        for bound in [*(bucket_label(b) for b in BUCKETS), INF]:
            running += per_bucket.get(bound, 0)
            buckets.append((bound, float(running)))
        result[key] = (buckets, sums[key])
    return result


def metrics_text() -> tuple[bytes, str]:
    """The exposition and its content type (prometheus_client must be importable)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _scrape_refusal(request: HttpRequest) -> HttpResponse | None:
    token = ops_settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        if hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode()):
            return None
        return error_response(
            status=401,
            message="The scrape token is not valid.",
            headers={"WWW-Authenticate": 'Bearer realm="grace-metrics"'},
        )
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return error_response(
            status=401,
            message="Log in as staff or send 'Authorization: Bearer <GRACE_METRICS_TOKEN>'.",
            headers={"WWW-Authenticate": 'Bearer realm="grace-metrics"'},
        )
    if not (user.is_active and user.is_staff):
        return error_response(status=403, message="Metrics are for staff only.")
    return None


@api.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics (staff or scrape token)",
    auth=None,
    response={200: None, **errors(401, 403, 503)},
    description="The Prometheus text exposition. A staff session, or "
    "`Authorization: Bearer <GRACE_METRICS_TOKEN>`; 503 `metrics_disabled` or "
    "`metrics_unavailable` when metrics are off or prometheus_client is missing.",
    openapi_extra={
        "responses": {200: {"description": "The exposition", "content": {"text/plain": {}}}},
        "security": [{"MetricsToken": []}, {"SessionUserAuth": []}],
    },
)
def metrics_view(request: HttpRequest) -> HttpResponse:
    refused = _scrape_refusal(request)
    if refused is not None:
        return refused
    if not feature_enabled("metrics"):
        return error_response(
            status=503,
            error="metrics_disabled",
            message="Metrics are switched off (GRACE_DISABLED_FEATURES).",
        )
    problem = dependency_problem("prometheus_client")
    if problem:
        return error_response(
            status=503,
            error="metrics_unavailable",
            message=f"prometheus_client cannot be imported ({problem}).",
        )
    metrics_flush(SCRAPE_FLUSH_SECONDS)
    content, content_type = metrics_text()
    return HttpResponse(content, content_type=content_type)
