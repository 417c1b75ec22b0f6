from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from executor.compat import task_finished
from executor.conf import ExecutorOptions
from executor.exceptions import QueueFull
from executor.models import Status, TaskRecord
from executor.selectors import queue_figures
from executor.services import (
    retry_delay,
    task_cancel,
    task_claim,
    task_reclaim_stale,
    task_release,
    task_retry,
)
from tests.executor import tasks
from tests.executor.conftest import BASE_OPTIONS, run_worker


def claim(limit: int = 100, queues: tuple[str, ...] = ("default",)) -> list[TaskRecord]:
    return task_claim(worker_id="w1", backend="default", queues=queues, limit=limit,
                      lease_seconds=30)


@pytest.mark.django_db
def test_claim_order_is_priority_then_enqueue_sequence(executor_options) -> None:
    enqueued = []
    for priority in (0, 5, -3, 5, 0, 100, -100, 5):
        enqueued.append((priority, tasks.noop.using(priority=priority).enqueue().id))
    # Same clock for everyone: the order must come from the sequence, not from time.
    TaskRecord.objects.update(enqueued_at=timezone.now())
    expected = [tid for _, tid in sorted(enqueued, key=lambda p: -p[0])]  # stable: FIFO
    assert [r.id for r in claim()] == expected


@pytest.mark.django_db
def test_fifo_within_a_priority_over_many_tasks(executor_options) -> None:
    ids = [tasks.noop.enqueue().id for _ in range(60)]
    got = [r.id for r in claim(limit=25)] + [r.id for r in claim(limit=100)]
    assert got == ids


@pytest.mark.django_db
def test_run_after_holds_a_task_back(executor_options) -> None:
    later = tasks.noop.using(run_after=timezone.now() + timedelta(hours=1), priority=50).enqueue()
    past = tasks.noop.using(run_after=timezone.now() - timedelta(seconds=1)).enqueue()
    now = tasks.noop.enqueue()
    assert [r.id for r in claim()] == [past.id, now.id]
    TaskRecord.objects.filter(id=later.id).update(run_after=timezone.now())
    assert [r.id for r in claim()] == [later.id]


@pytest.mark.django_db
def test_claim_takes_only_its_queues_and_marks_running(executor_options) -> None:
    tasks.noop.using(queue_name="other").enqueue()
    mine = tasks.noop.enqueue()
    [record] = claim()
    row = TaskRecord.objects.get(id=mine.id)
    assert record.id == mine.id
    assert (row.status, row.attempts, row.worker_id, row.worker_ids) == (
        Status.RUNNING, 1, "w1", ["w1"])
    assert row.lease_expires_at is not None and row.lease_expires_at > timezone.now()
    assert claim() == []


@pytest.mark.django_db
def test_release_gives_an_unstarted_task_back_uncounted(executor_options) -> None:
    tasks.noop.enqueue()
    records = claim()
    assert task_release(worker_id="w1", records=records, reason="test") == 1
    row = TaskRecord.objects.get()
    assert (row.status, row.attempts, row.worker_ids, row.started_at) == (
        Status.READY, 0, [], None)


@pytest.mark.django_db
def test_stale_running_tasks_are_reclaimed_with_the_attempt_counted(executor_options) -> None:
    again = tasks.noop.enqueue()
    spent = tasks.hang.enqueue("/dev/null")  # max_attempts=1
    claim()
    TaskRecord.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    reclaimed = task_reclaim_stale(worker_id="w2")
    assert {r.id for r in reclaimed} == {again.id, spent.id}
    row = TaskRecord.objects.get(id=again.id)
    assert (row.status, row.attempts) == (Status.READY, 1)
    assert row.errors[-1]["exception_class_path"] == "executor.exceptions.WorkerLost"
    assert TaskRecord.objects.get(id=spent.id).status == Status.FAILED
    assert task_reclaim_stale(worker_id="w2") == []


@pytest.mark.django_db
def test_cancel_ready_and_retry(executor_options) -> None:
    result = tasks.noop.enqueue()
    assert task_cancel(task_id=result.id) == Status.CANCELLED
    assert claim() == []
    fetched = tasks.noop.get_result(result.id)
    assert fetched.is_finished and fetched.errors[0].exception_class_path.endswith(
        "TaskCancelled")
    assert task_cancel(task_id="no-such-task") is None
    assert task_retry(task_ids=[result.id]) == 1
    row = TaskRecord.objects.get(id=result.id)
    assert (row.status, row.attempts, row.cancel_requested, row.finished_at) == (
        Status.READY, 0, False, None)
    [record] = claim()
    assert task_cancel(task_id=record.id) == Status.RUNNING
    assert TaskRecord.objects.get(id=record.id).cancel_requested is True


def test_retry_delay_grows_exponentially_with_jitter() -> None:
    options = ExecutorOptions.from_options({**BASE_OPTIONS, "retry_backoff": 2.0,
                                            "retry_backoff_max": 60.0})
    for attempt, step in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (10, 60.0)]:
        delays = {retry_delay(attempt=attempt, options=options) for _ in range(50)}
        assert all(step / 2 <= d <= step for d in delays)
        assert len(delays) > 1  # jittered


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_retention_holds_over_ten_thousand_tasks(executor_options, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="executor")
    executor_options(max_pending=10_000, retain_finished=1_000)
    for _ in range(10_000):
        tasks.noop.enqueue()
    with pytest.raises(QueueFull):
        tasks.noop.enqueue()
    seen: list[int] = []

    def sample(sender, task_result, **kwargs) -> None:
        seen.append(1)
        if len(seen) % 500 == 0:
            # Pruned as the queue drains, not only at the end.
            assert TaskRecord.objects.finished().count() <= 1_000 + 400

    task_finished.connect(sample)
    try:
        assert run_worker(concurrency=2, batch=64) == 0
    finally:
        task_finished.disconnect(sample)
    assert len(seen) == 10_000
    assert TaskRecord.objects.count() == 1_000
    assert TaskRecord.objects.filter(status=Status.SUCCESSFUL).count() == 1_000
    # The ones kept are the newest.
    newest = TaskRecord.objects.order_by("-finished_at", "-sequence")[:1].get()
    assert TaskRecord.objects.filter(sequence=newest.sequence).exists()
    [figures] = queue_figures()
    assert (figures["ready"], figures["running"], figures["finished"]) == (0, 0, 1_000)
