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
from grace.request_story import recent_request_ids, request_story

WINDOWS = (1, 6, 24, 72)


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, **extra}


def request_view(request: HttpRequest) -> HttpResponse:
    request_id = (request.GET.get("id") or "").strip()
    story = request_story(request_id=request_id) if request_id else None
    context = _context(
        request, f"Request {request_id}" if request_id else "Request story",
        request_id=request_id, story=story,
        recent=recent_request_ids() if story is None or not story.found else [],
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
    charts: list[dict[str, Any]] = []
    if board is not None:
        labels = board.window.labels()
        charts = [
            {"title": "Degraded replies (%)", "svg": svg_bars(
                board.degraded_rate, labels=labels, title="Degraded replies", unit="%",
                color="#ba2121", peak=max(100.0 if any(board.degraded_rate) else 0.0, 0.0))},
            {"title": "Replies", "svg": svg_bars(board.replies, labels=labels, title="Replies")},
            {"title": "Exceptions logged", "svg": svg_bars(
                board.errors, labels=labels, title="Exceptions logged", color="#ba2121")},
            {"title": "5xx responses", "svg": svg_bars(
                board.server_errors, labels=labels, title="5xx responses", color="#d9822b")},
            {"title": "Queue depth (READY, peak)", "svg": svg_bars(
                board.queue_depth, labels=labels, title="Queue depth", color="#5b8c5a")},
            {"title": "HTTP requests", "svg": svg_bars(
                board.requests, labels=labels, title="HTTP requests")},
        ]
        stage_charts = [
            {"title": f"Timeouts: {stage}", "svg": svg_bars(
                series, labels=labels, title=f"Timeouts of {stage}", color="#d9822b")}
            for stage, series in board.timeouts.items()
        ]
    else:
        stage_charts = []
    context = _context(
        request, "Operations dashboard", board=board, charts=charts,
        stage_charts=stage_charts, hours=hours, windows=WINDOWS, problem=problem,
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
