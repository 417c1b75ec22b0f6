"""Reads on the rollups for the dashboard: per-bucket series over the last hours.

The dashboard is made of panels. The core's panel draws what the core records (HTTP
requests, 5xx responses, exceptions logged); each app registers its own panel with
``dashboard_panel_register`` from ``AppConfig.ready()``. One query reads the rollups of
every metric the panels name; each panel turns its rows into totals, charts and tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from grace.metrics.models import MetricRollup
from grace.routers import METRICS_DB


@dataclass
class Window:
    hours: float
    buckets: int
    start: datetime
    bucket_seconds: float

    def index(self, moment: datetime) -> int | None:
        offset = (moment - self.start).total_seconds()
        if offset < 0:
            return None
        return min(self.buckets - 1, int(offset // self.bucket_seconds))

    def labels(self) -> list[str]:
        return [
            (self.start + timedelta(seconds=i * self.bucket_seconds)).strftime("%H:%M")
            for i in range(self.buckets)
        ]

    def zeros(self) -> list[float]:
        return [0.0] * self.buckets


def window_make(*, hours: float, buckets: int = 36, now: datetime | None = None) -> Window:
    now = now or timezone.now()
    bucket_seconds = hours * 3600 / buckets
    return Window(hours, buckets, now - timedelta(hours=hours), bucket_seconds)


@dataclass(frozen=True)
class Rollup:
    """One metric's per-minute rollup row (``labels`` decoded)."""

    minute: datetime
    name: str
    labels: dict[str, Any]
    total: float
    peak: float


@dataclass
class Chart:
    title: str
    series: list[float]
    color: str = "#417690"
    unit: str = ""
    peak: float | None = None


@dataclass
class Table:
    anchor: str
    title: str
    columns: tuple[str, ...]
    rows: list[list[Any]]
    empty: str = "none"


@dataclass
class PanelView:
    """What a panel shows: totals (label, value, element id), charts, tables."""

    totals: list[tuple[str, str, str]] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass(frozen=True)
class DashboardPanel:
    name: str
    title: str
    metrics: tuple[str, ...]
    build: Callable[[list[Rollup], Window], PanelView]
    order: int = 50


_panels: dict[str, DashboardPanel] = {}


def dashboard_panel_register(panel: DashboardPanel) -> None:
    """Add (or replace) a panel of the operations dashboard."""
    _panels[panel.name] = panel


def dashboard_panels() -> list[DashboardPanel]:
    return sorted(_panels.values(), key=lambda panel: (panel.order, panel.name))


@dataclass
class Dashboard:
    window: Window
    panels: list[tuple[DashboardPanel, PanelView]]

    @property
    def totals(self) -> list[tuple[str, str, str]]:
        return [total for _, view in self.panels for total in view.totals]


def dashboard_read(*, hours: float = 6, buckets: int = 36) -> Dashboard:
    window = window_make(hours=hours, buckets=buckets)
    panels = dashboard_panels()
    names = sorted({name for panel in panels for name in panel.metrics})
    rows = [
        Rollup(minute, name, json.loads(labels), total, peak)
        for minute, name, labels, total, peak in (
            MetricRollup.objects.using(METRICS_DB)
            .filter(minute__gte=window.start, name__in=names)
            .values_list("minute", "name", "labels", "total", "peak")
        )
    ]
    return Dashboard(window, [
        (panel, panel.build([row for row in rows if row.name in panel.metrics], window))
        for panel in panels
    ])


def count(value: float) -> str:
    return f"{value:.0f}"


def _core_panel(rows: list[Rollup], window: Window) -> PanelView:
    requests, server_errors, errors = window.zeros(), window.zeros(), window.zeros()
    for row in rows:
        at = window.index(row.minute)
        if at is None:
            continue
        if row.name == "http_requests":
            requests[at] += row.total
            if str(row.labels.get("status", "")).startswith("5"):
                server_errors[at] += row.total
        elif row.name == "errors_logged":
            errors[at] += row.total
    return PanelView(
        totals=[("exceptions logged", count(sum(errors)), "exceptions"),
                ("5xx responses", count(sum(server_errors)), "server-errors"),
                ("HTTP requests", count(sum(requests)), "requests")],
        charts=[Chart("Exceptions logged", errors, color="#ba2121"),
                Chart("5xx responses", server_errors, color="#d9822b"),
                Chart("HTTP requests", requests)],
    )


def dashboard_core_register() -> None:
    dashboard_panel_register(DashboardPanel(
        name="http", title="Requests and errors", metrics=("http_requests", "errors_logged"),
        build=_core_panel, order=90,
    ))
