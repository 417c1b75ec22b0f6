"""The task table: one row per enqueued task, from READY to a finished status.

Rows are claimed in ``priority`` order (higher first), then by ``sequence``: the enqueue
order, taken from the auto-incremented primary key and never from a clock, so two tasks
enqueued in the same microsecond still run first-in, first-out.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from executor.compat import (
    DEFAULT_TASK_PRIORITY,
    DEFAULT_TASK_QUEUE_NAME,
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
)


def task_id_new() -> str:
    return str(uuid.uuid4())


class Status(models.TextChoices):
    READY = "READY", "Ready"
    """Waiting to run: just enqueued, retrying after a backoff, or released by a worker."""

    RUNNING = "RUNNING", "Running"
    """Claimed by a worker under a lease that its heartbeats renew."""

    SUCCESSFUL = "SUCCESSFUL", "Successful"
    """Finished: the last attempt returned; ``return_value`` holds what it returned."""

    FAILED = "FAILED", "Failed"
    """Finished: every attempt raised, timed out or lost its worker; ``errors`` says how."""

    CANCELLED = "CANCELLED", "Cancelled"
    """Finished: cancelled before it ran, or stopped after a cancel was requested."""


FINISHED = (Status.SUCCESSFUL, Status.FAILED, Status.CANCELLED)


class TaskRecordQuerySet(models.QuerySet["TaskRecord"]):
    def ready(self) -> TaskRecordQuerySet:
        """READY tasks, due now or deferred (these count against ``max_pending``)."""
        return self.filter(status=Status.READY)

    def running(self) -> TaskRecordQuerySet:
        return self.filter(status=Status.RUNNING)

    def finished(self) -> TaskRecordQuerySet:
        return self.filter(status__in=FINISHED)

    def claimable(self, *, backend: str, queues: Iterable[str]) -> TaskRecordQuerySet:
        """READY tasks due now, in the order they must run."""
        now = timezone.now()
        return (
            self.ready()
            .filter(backend_name=backend, queue_name__in=list(queues))
            .filter(Q(run_after__isnull=True) | Q(run_after__lte=now))
            .order_by("-priority", "sequence")
        )

    def stale(self) -> TaskRecordQuerySet:
        """RUNNING tasks whose lease expired: their worker died or lost contact."""
        return self.running().filter(lease_expires_at__lt=timezone.now())

    def owned_by(self, worker_id: str) -> TaskRecordQuerySet:
        return self.running().filter(worker_id=worker_id)


class TaskRecord(models.Model):
    sequence = models.BigAutoField("sequence", primary_key=True)
    id = models.CharField("task id", max_length=64, unique=True, default=task_id_new)
    task_path = models.CharField("task path", max_length=255)
    task_name = models.CharField("task name", max_length=128)
    backend_name = models.CharField("backend", max_length=64)
    queue_name = models.CharField("queue", max_length=64, default=DEFAULT_TASK_QUEUE_NAME)
    priority = models.SmallIntegerField("priority", default=DEFAULT_TASK_PRIORITY)
    status = models.CharField("status", max_length=16, choices=Status, default=Status.READY)
    args = models.JSONField("args", default=list)
    kwargs = models.JSONField("kwargs", default=dict)
    run_after = models.DateTimeField("run after", null=True, blank=True)
    enqueued_at = models.DateTimeField("enqueued at", default=timezone.now)
    started_at = models.DateTimeField("started at", null=True, blank=True)
    last_attempted_at = models.DateTimeField("last attempted at", null=True, blank=True)
    finished_at = models.DateTimeField("finished at", null=True, blank=True)
    timeout = models.FloatField("timeout (s)")
    max_attempts = models.PositiveSmallIntegerField("max attempts")
    attempts = models.PositiveSmallIntegerField("attempts", default=0)
    worker_id = models.CharField("worker", max_length=64, blank=True, default="")
    worker_ids = models.JSONField("workers", default=list)
    lease_expires_at = models.DateTimeField("lease expires at", null=True, blank=True)
    cancel_requested = models.BooleanField("cancel requested", default=False)
    return_value = models.JSONField("result", null=True, blank=True)
    errors = models.JSONField("errors", default=list)
    request_id = models.CharField("request ID", max_length=64, blank=True, default="")

    objects = TaskRecordQuerySet.as_manager()

    class Meta:
        verbose_name = "task"
        verbose_name_plural = "tasks"
        ordering = ["-sequence"]
        indexes = [
            models.Index(
                F("backend_name"),
                F("queue_name"),
                F("priority").desc(),
                F("sequence"),
                name="executor_ready_idx",
                condition=Q(status="READY"),
            ),
            models.Index(
                fields=["backend_name", "queue_name", "sequence"],
                name="executor_ready_seq_idx",
                condition=Q(status="READY"),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="executor_running_idx",
                condition=Q(status="RUNNING"),
            ),
            models.Index(
                F("finished_at").desc(),
                F("sequence").desc(),
                name="executor_finished_idx",
                condition=Q(status__in=["SUCCESSFUL", "FAILED", "CANCELLED"]),
            ),
            models.Index(fields=["request_id"], name="executor_request_id_idx"),
            models.Index(fields=["worker_id", "status"], name="executor_worker_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__gte=TASK_MIN_PRIORITY, priority__lte=TASK_MAX_PRIORITY),
                name="executor_priority_range",
            ),
            models.CheckConstraint(condition=Q(attempts__gte=0), name="executor_attempts_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED
