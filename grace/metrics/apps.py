from __future__ import annotations

from django.apps import AppConfig


class MetricsConfig(AppConfig):
    """Metric events, stored in the ``metrics`` database (see grace/routers.py)."""

    name = "grace.metrics"
    label = "metrics"
    verbose_name = "Metrics"
