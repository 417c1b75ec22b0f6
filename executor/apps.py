from __future__ import annotations

from django.apps import AppConfig

from executor.conf import EXECUTOR_SPECS, OPTION_SPECS
from grace.conf import settings_specs_register
from grace.health import health_register
from grace.metrics.catalog import metric_register


class ExecutorConfig(AppConfig):
    name = "executor"
    verbose_name = "Executor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: they import models, which the app registry loads
        # after this module.
        from executor import checks  # noqa: F401 - registers the system checks
        from executor.dashboard import EXECUTOR_PANEL
        from executor.health import queue_health
        from executor.metrics import QUEUE_METRICS, queue_gauges
        from executor.story import TASKS_SOURCE
        from grace.metrics.buffer import gauge_source_register
        from grace.metrics.selectors import dashboard_panel_register
        from grace.request_story import story_source_register

        health_register("queue", queue_health)
        for metric in QUEUE_METRICS:
            metric_register(metric)
        gauge_source_register(queue_gauges)
        story_source_register(TASKS_SOURCE)
        dashboard_panel_register(EXECUTOR_PANEL)

        settings_specs_register("EXECUTOR", EXECUTOR_SPECS, title="Executor: the workers")
        settings_specs_register(
            'TASKS["default"]["OPTIONS"]', OPTION_SPECS, title="Executor: the queue",
            about="The backend's OPTIONS, checked by the system checks `executor.E001` to "
            "`executor.E009` (docs/executor.md).",
        )
