"""Settings for bench/bench_executor.py: Grace's, plus django-tasks-db for the baseline.

``BENCH_TASKS_BACKEND`` picks the backend under test: ``executor`` or ``db``.
"""

from __future__ import annotations

import os

from grace.settings import *  # noqa: F403
from grace.settings import INSTALLED_APPS
from grace.settings import TASKS as _PROJECT_TASKS

INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks_db"]

if os.environ.get("BENCH_TASKS_BACKEND", "executor") == "db":
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
else:
    TASKS = {
        "default": {
            "BACKEND": "executor.backend.ExecutorBackend",
            "QUEUES": ["default"],
            # Keep every row: the drain rate is read from their timestamps.
            "OPTIONS": {
                **_PROJECT_TASKS["default"]["OPTIONS"],
                "max_pending": 1_000_000,
                "retain_finished": 1_000_000,
            },
        }
    }
