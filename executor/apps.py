from __future__ import annotations

from django.apps import AppConfig


class ExecutorConfig(AppConfig):
    name = "executor"
    verbose_name = "Executor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from executor import checks  # noqa: F401 - registers the system checks
        from executor.conf import EXECUTOR_SPECS, OPTION_SPECS
        from grace.conf import settings_specs_register

        settings_specs_register("EXECUTOR", EXECUTOR_SPECS, title="Executor: the workers")
        settings_specs_register(
            'TASKS["default"]["OPTIONS"]', OPTION_SPECS, title="Executor: the queue",
            about="The backend's OPTIONS, checked by the system checks `executor.E001` to "
            "`executor.E009` (docs/executor.md).",
        )
