"""Metric storage in the ``metrics`` database (grace/routers.py sends this app there).

- ``MetricEvent``: each measurement as recorded (kept ``GRACE_METRICS_EVENTS_HOURS``),
  with its request ID so a request's story can show its own figures.
- ``MetricRollup``: count, sum and peak per metric, label set and minute (kept
  ``GRACE_METRICS_RETENTION_DAYS``): what the dashboard draws.
- ``MetricTotal``: running totals per metric and label set since the database was made
  (never pruned; bounded by the label sets): what ``/api/metrics`` exposes as counters
  and histograms.

Labels are stored as canonical JSON text (sorted keys), so equal label sets are equal
strings and can be part of a unique key.
"""

from __future__ import annotations

from django.db import models


class MetricEvent(models.Model):
    """One measurement: a counter increment or an observed value, with its labels."""

    name = models.CharField(max_length=100)
    value = models.FloatField(default=1.0)
    labels = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    created = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class MetricRollup(models.Model):
    """A metric's measurements with one label set during one minute."""

    minute = models.DateTimeField()
    name = models.CharField(max_length=100)
    labels = models.TextField(default="{}")
    count = models.BigIntegerField(default=0)
    total = models.FloatField(default=0.0)
    peak = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-minute", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "name", "labels"], name="metrics_rollup_unique"
            )
        ]
        indexes = [models.Index(fields=["name", "minute"], name="metrics_rollup_name_minute")]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.name}{self.labels} {self.total}"


class MetricTotal(models.Model):
    """A metric's running count and sum with one label set (histograms: per bucket)."""

    name = models.CharField(max_length=100)
    labels = models.TextField(default="{}")
    count = models.BigIntegerField(default=0)
    total = models.FloatField(default=0.0)
    updated = models.DateTimeField()

    class Meta:
        ordering = ["name", "labels"]
        constraints = [
            models.UniqueConstraint(fields=["name", "labels"], name="metrics_total_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name}{self.labels} {self.total}"
