from __future__ import annotations

from django.db import models


class MetricEvent(models.Model):
    """One measurement (a counter increment or an observed value) with its labels."""

    name = models.CharField(max_length=100, db_index=True)
    value = models.FloatField(default=1.0)
    labels = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
