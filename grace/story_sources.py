"""The core's sources of the request page: the error log, the audit log and the
request's own metrics (see grace/request_story.py)."""

from __future__ import annotations

from typing import Any

from grace.metrics.models import MetricEvent
from grace.models import AuditEntry, ErrorLog
from grace.request_story import Cell, Moment, StorySource, admin_url, story_source_register
from grace.routers import METRICS_DB


def _errors(rid: str, limit: int) -> list[Any]:
    return list(ErrorLog.objects.filter(request_id=rid).order_by("created", "id")[:limit])


def _error_moments(row: Any) -> list[Moment]:
    return [Moment(row.created, "error", f"{row.status} {row.exception_class}", admin_url(row))]


def _error_row(row: Any) -> list[Cell]:
    return [
        Cell(row.created.strftime("%H:%M:%S.%f"), admin_url(row)),
        Cell(row.status),
        Cell(f"{row.exception_class}: {row.message[:200]}"),
        Cell(f"{row.method} {row.path}"),
    ]


def _audit(rid: str, limit: int) -> list[Any]:
    return list(AuditEntry.objects.filter(request_id=rid).order_by("sequence")[:limit])


def _audit_moments(entry: Any) -> list[Moment]:
    return [Moment(entry.created, "audit", f"#{entry.sequence} {entry.action} {entry.resource}",
                   admin_url(entry))]


def _audit_row(entry: Any) -> list[Cell]:
    return [
        Cell(entry.sequence, admin_url(entry)), Cell(entry.action), Cell(entry.actor),
        Cell(entry.resource), Cell(entry.entry_hash[:12], css="code"),
    ]


def _metrics(rid: str, limit: int) -> list[Any]:
    return list(
        MetricEvent.objects.using(METRICS_DB).filter(request_id=rid)
        .order_by("created", "id")[:limit]
    )


def _metric_moments(event: Any) -> list[Moment]:
    if event.name != "http_requests":
        return []
    labels = event.labels or {}
    return [Moment(event.created, "http", f"{labels.get('method')} {labels.get('route')} -> "
                   f"{labels.get('status')}")]


def _metric_row(event: Any) -> list[Cell]:
    labels = " ".join(f"{key}={value}" for key, value in (event.labels or {}).items())
    return [Cell(event.name), Cell(labels), Cell(f"{event.value:.4g}")]


def story_sources_register() -> None:
    story_source_register(StorySource(
        name="errors", title="Error log", read=_errors, moments=_error_moments,
        columns=("created", "status", "exception", "path"), row=_error_row, order=80))
    story_source_register(StorySource(
        name="audit", title="Audit entries", read=_audit, moments=_audit_moments,
        columns=("#", "action", "actor", "resource", "hash"), row=_audit_row, order=90))
    story_source_register(StorySource(
        name="metrics", title="Metrics recorded", read=_metrics, moments=_metric_moments,
        columns=("metric", "labels", "value"), row=_metric_row, order=95))
