"""Sends the metrics app (its models and its migrations) to the ``metrics`` database."""

from __future__ import annotations

from typing import Any

METRICS_DB = "metrics"
METRICS_APPS = {"metrics"}


class MetricsRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return METRICS_DB if model._meta.app_label in METRICS_APPS else "default"

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return METRICS_DB if model._meta.app_label in METRICS_APPS else "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        in1 = obj1._meta.app_label in METRICS_APPS
        in2 = obj2._meta.app_label in METRICS_APPS
        return in1 == in2

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        if app_label in METRICS_APPS:
            return db == METRICS_DB
        return db != METRICS_DB
