"""The operator's pages in the admin (staff only, under ``/admin/ops/``):

- ``request/?id=<request ID>``: the whole story of one request (messages, stages and
  flags, security events, tasks, error log rows, audit entries, its own metrics).
- ``dashboard/?hours=6``: degraded-reply rate, timeouts by stage, errors and queue depth
  over the last hours, as small inline SVG charts.
- ``events/``: the live event feed (``/ws/events/``).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from grace.admin_charts import svg_bars
from grace.metrics.selectors import dashboard_read
from grace.request_story import recent_requests, request_story

WINDOWS = (1, 6, 24, 72)


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, **extra}


def request_view(request: HttpRequest) -> HttpResponse:
    request_id = (request.GET.get("id") or "").strip()
    story = request_story(request_id=request_id) if request_id else None
    context = _context(
        request,
        f"Request {request_id}" if request_id else "Request story",
        request_id=request_id,
        story=story,
        recent=recent_requests() if story is None or not story.found else [],
    )
    return TemplateResponse(request, "admin/grace/request.html", context)


def dashboard_view(request: HttpRequest) -> HttpResponse:
    try:
        hours = int(request.GET.get("hours", "6"))
    except ValueError:
        hours = 6
    hours = hours if hours in WINDOWS else 6
    problem = ""
    try:
        board = dashboard_read(hours=hours)
    except Exception as exc:  # the metrics database is down: say so, do not 500
        board, problem = None, f"{type(exc).__name__}: {exc}"[:300]
    panels: list[dict[str, Any]] = []
    if board is not None:
        labels = board.window.labels()
        panels = [
            {
                "name": panel.name,
                "title": panel.title,
                "tables": view.tables,
                "charts": [
                    {
                        "title": chart.title,
                        "svg": svg_bars(
                            chart.series,
                            labels=labels,
                            title=chart.title,
                            unit=chart.unit,
                            color=chart.color,
                            peak=chart.peak,
                        ),
                    }
                    for chart in view.charts
                ],
            }
            for panel, view in board.panels
        ]
    context = _context(
        request,
        "Operations dashboard",
        board=board,
        panels=panels,
        hours=hours,
        windows=WINDOWS,
        problem=problem,
        bucket_minutes=round(hours * 60 / 36, 1),
    )
    return TemplateResponse(request, "admin/grace/dashboard.html", context)


def events_view(request: HttpRequest) -> HttpResponse:
    return TemplateResponse(request, "admin/grace/events.html", _context(request, "Live events"))


urlpatterns = [
    path("request/", admin.site.admin_view(request_view), name="grace-ops-request"),
    path("dashboard/", admin.site.admin_view(dashboard_view), name="grace-ops-dashboard"),
    path("events/", admin.site.admin_view(events_view), name="grace-ops-events"),
]
