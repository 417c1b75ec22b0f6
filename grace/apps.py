from __future__ import annotations

from django.apps import AppConfig


class GraceConfig(AppConfig):
    name = "grace"
    verbose_name = "Grace operations"

    def ready(self) -> None:
        from grace import checks, db, signals  # noqa: F401 - receivers and checks
        from grace.ops import ops_ready

        ops_ready()  # audit, events, metrics: receivers, system checks, health entries
