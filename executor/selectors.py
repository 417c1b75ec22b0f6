"""Reads on the task table: what a worker, the admin and the API need to know."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from executor.models import FINISHED, Status, TaskRecord


def cancel_requested_sequences(*, worker_id: str) -> set[int]:
    """Tasks this worker holds that someone asked to stop."""
    return set(
        TaskRecord.objects.owned_by(worker_id)
        .filter(cancel_requested=True)
        .values_list("sequence", flat=True)
    )


def queue_has_ready(*, backend: str, queues: Iterable[str]) -> bool:
    """Any READY task (due or deferred) left in these queues?"""
    return TaskRecord.objects.ready().filter(
        backend_name=backend, queue_name__in=list(queues)
    ).exists()


def queue_figures() -> list[dict[str, Any]]:
    """Per queue: READY, RUNNING and finished counts, and the age of the oldest READY task."""
    now = timezone.now()
    rows = (
        TaskRecord.objects.values("backend_name", "queue_name")
        .annotate(
            ready=Count("sequence", filter=Q(status=Status.READY)),
            running=Count("sequence", filter=Q(status=Status.RUNNING)),
            finished=Count("sequence", filter=Q(status__in=FINISHED)),
            oldest_ready=Min("enqueued_at", filter=Q(status=Status.READY)),
        )
        .order_by("backend_name", "queue_name")
    )
    figures = []
    for row in rows:
        oldest: datetime | None = row["oldest_ready"]
        row["oldest_ready_age"] = (now - oldest).total_seconds() if oldest else None
        figures.append(row)
    return figures
