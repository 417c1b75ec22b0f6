"""Reads on the rollups for the dashboard: per-bucket series over the last hours."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from grace.metrics.models import MetricRollup
from grace.routers import METRICS_DB

STAGES = ("inspect", "recall", "respond", "store", "followup")


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


def window_make(*, hours: float, buckets: int = 36, now: datetime | None = None) -> Window:
    now = now or timezone.now()
    bucket_seconds = hours * 3600 / buckets
    return Window(hours, buckets, now - timedelta(hours=hours), bucket_seconds)


@dataclass
class Dashboard:
    window: Window
    requests: list[float] = field(default_factory=list)
    replies: list[float] = field(default_factory=list)
    degraded: list[float] = field(default_factory=list)
    degraded_rate: list[float] = field(default_factory=list)
    timeouts: dict[str, list[float]] = field(default_factory=dict)
    stage_totals: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: list[float] = field(default_factory=list)
    """Unhandled exceptions written to the error log (REST, websocket, admin)."""
    server_errors: list[float] = field(default_factory=list)
    """HTTP responses with a 5xx status (including deliberate 503s)."""
    queue_depth: list[float] = field(default_factory=list)
    flags: list[tuple[str, float]] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, float]:
        replies, degraded = sum(self.replies), sum(self.degraded)
        return {
            "requests": sum(self.requests),
            "replies": replies,
            "degraded": degraded,
            "degraded_rate": round(100 * degraded / replies, 1) if replies else 0.0,
            "timeouts": sum(sum(series) for series in self.timeouts.values()),
            "errors": sum(self.errors),
            "server_errors": sum(self.server_errors),
            "queue_peak": max(self.queue_depth, default=0.0),
        }


def dashboard_read(*, hours: float = 6, buckets: int = 36) -> Dashboard:
    window = window_make(hours=hours, buckets=buckets)
    zeros = [0.0] * buckets
    board = Dashboard(window, requests=list(zeros), replies=list(zeros), degraded=list(zeros),
                      errors=list(zeros), server_errors=list(zeros), queue_depth=list(zeros))
    board.timeouts = {stage: list(zeros) for stage in STAGES}
    board.stage_totals = {stage: {"timeout": 0.0, "error": 0.0} for stage in STAGES}
    queue_minutes: dict[datetime, float] = defaultdict(float)
    flags: dict[str, float] = defaultdict(float)
    rows = (
        MetricRollup.objects.using(METRICS_DB)
        .filter(minute__gte=window.start, name__in=[
            "http_requests", "chat_replies", "chat_stage_outcomes", "errors_logged",
            "queue_ready", "chat_degraded_flags",
        ])
        .values_list("minute", "name", "labels", "total", "peak")
    )
    for minute, name, raw_labels, total, peak in rows:
        at = window.index(minute)
        if at is None:
            continue
        labels = json.loads(raw_labels)
        if name == "http_requests":
            board.requests[at] += total
            if str(labels.get("status", "")).startswith("5"):
                board.server_errors[at] += total
        elif name == "errors_logged":
            board.errors[at] += total
        elif name == "chat_replies":
            board.replies[at] += total
            if labels.get("degraded") == "true":
                board.degraded[at] += total
        elif name == "chat_stage_outcomes":
            stage, status = labels.get("stage"), labels.get("status")
            if stage in board.timeouts and status in ("timeout", "error"):
                board.stage_totals[stage][status] += total
                if status == "timeout":
                    board.timeouts[stage][at] += total
        elif name == "queue_ready":
            queue_minutes[minute] += peak
        elif name == "chat_degraded_flags":
            flags[labels.get("flag", "?")] += total
    for minute, depth in queue_minutes.items():
        at = window.index(minute)
        if at is not None:
            board.queue_depth[at] = max(board.queue_depth[at], depth)
    board.degraded_rate = [
        round(100 * d / r, 1) if r else 0.0 for d, r in zip(board.degraded, board.replies,
                                                              strict=True)
    ]
    board.flags = sorted(flags.items(), key=lambda item: -item[1])
    return board
