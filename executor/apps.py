from __future__ import annotations

from django.apps import AppConfig


class ExecutorConfig(AppConfig):
    name = "executor"
    verbose_name = "Executor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from executor import checks  # noqa: F401 - registers the system checks
