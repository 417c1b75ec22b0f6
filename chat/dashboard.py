"""The chat's panel of the operations dashboard: replies, the degraded rate, timeouts by
stage and why replies were degraded (registered from ``ChatConfig.ready()``).

Timeouts and errors are counted from ``chat_stage_outcomes``, recorded through
``chat.metrics.stage_outcomes``: a respond stage whose model timed out or failed counts
there, as it does on the request page."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from grace.metrics.selectors import (
    Chart,
    DashboardPanel,
    PanelView,
    Rollup,
    Table,
    Window,
    count,
)
from grace.request_story import Cell


def chat_panel(stages: Sequence[str]) -> DashboardPanel:
    """The panel, with a timeout chart for each of ``stages`` (in pipeline order)."""

    def build(rows: list[Rollup], window: Window) -> PanelView:
        replies, degraded = window.zeros(), window.zeros()
        timeouts = {stage: window.zeros() for stage in stages}
        totals = {stage: {"timeout": 0.0, "error": 0.0} for stage in stages}
        flags: dict[str, float] = defaultdict(float)
        for row in rows:
            at = window.index(row.minute)
            if at is None:
                continue
            if row.name == "chat_replies":
                replies[at] += row.total
                if row.labels.get("degraded") == "true":
                    degraded[at] += row.total
            elif row.name == "chat_stage_outcomes":
                stage, status = row.labels.get("stage"), row.labels.get("status")
                if stage in totals and status in ("timeout", "error"):
                    totals[stage][status] += row.total
                    if status == "timeout":
                        timeouts[stage][at] += row.total
            elif row.name == "chat_degraded_flags":
                flags[str(row.labels.get("flag", "?"))] += row.total
        rate = [round(100 * d / r, 1) if r else 0.0 for d, r in zip(degraded, replies, strict=True)]
        all_replies, all_degraded = sum(replies), sum(degraded)
        overall = round(100 * all_degraded / all_replies, 1) if all_replies else 0.0
        return PanelView(
            totals=[
                ("replies", count(all_replies), "replies"),
                ("degraded", count(all_degraded), "degraded"),
                ("degraded rate", f"{overall}%", "degraded-rate"),
                ("stage timeouts", count(sum(sum(s) for s in timeouts.values())), "timeouts"),
            ],
            charts=[
                Chart(
                    "Degraded replies (%)",
                    rate,
                    color="#ba2121",
                    unit="%",
                    peak=100.0 if any(rate) else 0.0,
                ),
                Chart("Replies", replies),
                *(
                    Chart(f"Timeouts: {stage}", series, color="#d9822b")
                    for stage, series in timeouts.items()
                ),
            ],
            tables=[
                Table(
                    "stages",
                    "Timeouts and errors by stage (respond: the model's included)",
                    ("stage", "timeouts", "errors"),
                    [
                        [Cell(stage), Cell(count(c["timeout"])), Cell(count(c["error"]))]
                        for stage, c in totals.items()
                    ],
                ),
                Table(
                    "flags",
                    "Why replies were degraded",
                    ("flag", "replies"),
                    [
                        [Cell(flag, css="flag"), Cell(count(n))]
                        for flag, n in sorted(flags.items(), key=lambda item: -item[1])
                    ],
                    empty="No degraded reply in this window.",
                ),
            ],
        )

    return DashboardPanel(
        name="chat",
        title="Chat replies",
        metrics=("chat_replies", "chat_stage_outcomes", "chat_degraded_flags"),
        build=build,
        order=10,
    )
