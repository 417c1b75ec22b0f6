"""The ``queue`` entry of ``/api/health`` (registered from ``ExecutorConfig.ready()``).

READY and RUNNING counts and the oldest READY task's age. A queue older than
``GRACE_HEALTH_QUEUE_MAX_AGE`` is reported ``stale`` with a warning but stays "ok":
replies never wait for the queue, so a stopped worker must not take the web servers out
of a load balancer. Only an unreadable queue is an error.
"""

from __future__ import annotations

from typing import Any

from executor.conf import executor_settings
from executor.selectors import queue_figures


def queue_health() -> dict[str, Any]:
    figures = queue_figures()
    ready = sum(int(row["ready"]) for row in figures)
    running = sum(int(row["running"]) for row in figures)
    ages = [row["oldest_ready_age"] for row in figures if row["oldest_ready_age"] is not None]
    oldest = round(max(ages), 1) if ages else None
    result: dict[str, Any] = {
        "status": "ok", "ready": ready, "running": running, "oldest_ready_age": oldest,
        "stale": False,
    }
    limit = executor_settings.HEALTH_QUEUE_MAX_AGE
    if oldest is not None and oldest > limit:
        result["stale"] = True
        result["warning"] = (
            f"the oldest READY task waits for {oldest:.0f}s (over {limit:g}s): "
            "is a worker (manage.py run_executor) running?"
        )
    return result
