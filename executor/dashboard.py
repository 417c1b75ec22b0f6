"""The executor's panel of the operations dashboard: queue depth (registered from
``ExecutorConfig.ready()``)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from grace.metrics.selectors import Chart, DashboardPanel, PanelView, Rollup, Window, count


def _build(rows: list[Rollup], window: Window) -> PanelView:
    by_minute: dict[datetime, float] = defaultdict(float)
    for row in rows:
        by_minute[row.minute] += row.peak  # every queue's peak in that minute
    depth = window.zeros()
    for minute, value in by_minute.items():
        at = window.index(minute)
        if at is not None:
            depth[at] = max(depth[at], value)
    return PanelView(
        totals=[("queue peak", count(max(depth, default=0.0)), "queue-peak")],
        charts=[Chart("Queue depth (READY, peak)", depth, color="#5b8c5a")],
    )


EXECUTOR_PANEL = DashboardPanel(
    name="queue", title="Task queue", metrics=("queue_ready",), build=_build, order=20,
)
