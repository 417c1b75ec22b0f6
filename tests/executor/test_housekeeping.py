"""A worker's chores, run without a worker: cancel requests, heartbeat, reclaim, prune."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from executor.compat import task_backends
from executor.housekeeping import Housekeeping
from executor.models import Status, TaskRecord
from executor.services import task_cancel, task_claim
from tests.executor import tasks


def chores(worker_id: str = "w1") -> Housekeeping:
    return Housekeeping(worker_id=worker_id, backend=task_backends["default"])


@pytest.mark.django_db
def test_a_tick_reports_cancel_requests_renews_leases_and_reclaims(executor_options) -> None:
    executor_options(lease_seconds=30.0)
    lost = tasks.noop.enqueue()
    task_claim(worker_id="w0", backend="default", queues=["default"], limit=1,
               lease_seconds=30)
    TaskRecord.objects.filter(id=lost.id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1))
    keep, stop = tasks.noop.enqueue(), tasks.noop.enqueue()
    held = task_claim(worker_id="w1", backend="default", queues=["default"], limit=2,
                      lease_seconds=1)
    assert task_cancel(task_id=stop.id) == Status.RUNNING
    housekeeping = chores()

    wanted = housekeeping.tick(holding=True)

    assert wanted == {r.sequence for r in held if r.id == stop.id}
    soon = timezone.now() + timedelta(seconds=20)
    assert all(row.lease_expires_at > soon
               for row in TaskRecord.objects.filter(id__in=[keep.id, stop.id]))
    assert TaskRecord.objects.get(id=lost.id).status == Status.READY  # w0's, reclaimed
    assert housekeeping.tick(holding=True) == set()  # the next tick is not due yet


@pytest.mark.django_db
def test_a_worker_holding_nothing_asks_nothing(executor_options) -> None:
    tasks.noop.enqueue()
    [record] = task_claim(worker_id="w1", backend="default", queues=["default"], limit=1,
                          lease_seconds=30)
    task_cancel(task_id=record.id)
    assert chores().tick(holding=False) == set()


@pytest.mark.django_db
def test_prune_keeps_the_newest_finished_tasks(executor_options) -> None:
    executor_options(retain_finished=2)
    results = [tasks.noop.enqueue() for _ in range(5)]
    for result in results:
        task_cancel(task_id=result.id)
    housekeeping = chores()
    housekeeping.finished = 5
    housekeeping.prune(force=False)  # fewer than PRUNE_EVERY finished: not yet
    assert TaskRecord.objects.count() == 5
    housekeeping.prune(force=True)
    assert set(TaskRecord.objects.values_list("id", flat=True)) == {
        results[3].id, results[4].id}
    assert housekeeping.finished == 0
