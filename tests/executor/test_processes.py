"""Real ``run_executor`` processes: kill -9, SIGTERM drain, two workers, cancel."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from executor.models import Status, TaskRecord
from executor.services import task_cancel
from tests.executor import tasks
from tests.executor.conftest import children_of, running, statuses, wait_until
from tests.timing import limit

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def status_of(task_id: str) -> str:
    return TaskRecord.objects.get(id=task_id).status


def test_kill_9_mid_task_then_another_worker_recovers_it(
    executor_options, worker_process, tmp_path
) -> None:
    log = str(tmp_path / "runs")
    result = tasks.sleep_record.enqueue(log, "A", 2.0)
    fast = {"GRACE_EXECUTOR_LEASE_SECONDS": "2"}
    first = worker_process(env=fast)
    wait_until(lambda: "start A" in tasks.marks(log))
    children = children_of(first.pid)
    assert children
    first.signal(signal.SIGKILL)
    first.wait(10)
    # Its children die with it: the first attempt can never write its "end".
    wait_until(lambda: not any(running(pid, at) for pid, at in children.items()), timeout=10)
    assert status_of(result.id) == Status.RUNNING  # nobody finished it
    second = worker_process(env=fast)
    wait_until(lambda: status_of(result.id) == Status.SUCCESSFUL, timeout=30)
    row = TaskRecord.objects.get(id=result.id)
    assert row.attempts == 2
    assert row.errors[0]["exception_class_path"] == "executor.exceptions.WorkerLost"
    assert row.worker_ids[0] != row.worker_ids[1]
    assert tasks.marks(log) == ["start A", "start A", "end A"]
    assert "reclaimed from a lost worker" in second.log()


def test_sigterm_drains_running_tasks_and_gives_unstarted_ones_back(
    executor_options, worker_process, tmp_path
) -> None:
    log = str(tmp_path / "runs")
    sleepers = [tasks.sleep_record.using(priority=10).enqueue(log, f"s{i}", 1.5)
                for i in range(2)]
    waiting = [tasks.record.enqueue(log, f"w{i}") for i in range(6)]
    worker = worker_process("--concurrency", "2", "--batch", "8")
    wait_until(lambda: tasks.marks(log).count("start s0") + tasks.marks(log).count("start s1")
               == 2)
    # The 6 others are claimed too (batch 8) but not started: no child is free.
    assert all(status_of(w.id) == Status.RUNNING for w in waiting)
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert all(status_of(s.id) == Status.SUCCESSFUL for s in sleepers)
    for w in waiting:
        row = TaskRecord.objects.get(id=w.id)
        assert (row.status, row.attempts, row.worker_ids) == (Status.READY, 0, [])
    assert not any(m.startswith("w") for m in tasks.marks(log))
    assert "draining" in worker.log()


def test_grace_period_over_and_second_signal(executor_options, worker_process, tmp_path) -> None:
    log = str(tmp_path / "runs")
    long = tasks.sleep_record.enqueue(log, "L", 30)
    worker = worker_process(env={"GRACE_EXECUTOR_SHUTDOWN_GRACE_SECONDS": "1"})
    wait_until(lambda: "start L" in tasks.marks(log))
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert time.monotonic() - started < 1 + limit(7)  # the 1 s grace, a generous margin
    row = TaskRecord.objects.get(id=long.id)
    assert (row.status, row.attempts) == (Status.READY, 0)

    again = worker_process()
    wait_until(lambda: tasks.marks(log).count("start L") == 2)
    again.signal(signal.SIGTERM)
    wait_until(lambda: "draining" in again.log())  # the first signal is handled
    again.signal(signal.SIGTERM)  # second signal: abort at once
    assert again.wait(10) == 1
    assert status_of(long.id) == Status.READY
    assert "aborting" in again.log()


def test_two_workers_share_a_sqlite_queue_without_locks_or_double_runs(
    executor_options, worker_process, tmp_path
) -> None:
    log = str(tmp_path / "runs")
    count = 1500
    for i in range(count):
        tasks.record.enqueue(log, f"t{i}")
    keep = {"GRACE_EXECUTOR_RETAIN_FINISHED": str(count)}
    workers = [worker_process("--concurrency", "2", "--batch", "8", env=keep) for _ in range(2)]
    wait_until(lambda: statuses().get(Status.SUCCESSFUL, 0) == count, timeout=90, step=0.2)
    runs = Counter(tasks.marks(log))
    assert len(runs) == count and set(runs.values()) == {1}
    ran_by = Counter(w for ids in TaskRecord.objects.values_list("worker_ids", flat=True)
                     for w in ids)
    assert len(ran_by) == 2  # both took part
    for worker in workers:
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        assert "database is locked" not in worker.log()
        assert "Traceback" not in worker.log()


def test_cancel_a_running_task(executor_options, worker_process, tmp_path) -> None:
    log = str(tmp_path / "runs")
    stubborn_log = tmp_path / "stubborn"
    # A READY task cancelled before a worker can claim it never runs. (Once a worker with a
    # free slot polls, a READY task may be claimed at any moment, before task_cancel: it
    # is then RUNNING, asked to stop, and a task that never checks runs to its end.)
    never = tasks.record.enqueue(log, "never")
    assert task_cancel(task_id=never.id) == Status.CANCELLED
    # One child: the worker's first claim takes both tasks (one batch), the cooperative one
    # runs and the stubborn one waits in the same child behind it (RUNNING, not started).
    # The stubborn one is asked to stop there, so the request is on its row before its
    # attempt starts: nothing races its 2 s timeout. (Cancelled while it ran, after the
    # cooperative one, its timeout could fire first on a slow machine: the attempt then
    # failed un-cancelled and was retried, and the cancel met a READY or a second attempt.)
    cooperative = tasks.cooperative.using(priority=10).enqueue(log)
    stubborn = tasks.stubborn.enqueue(str(stubborn_log))  # timeout=2, 3 attempts
    worker = worker_process("--concurrency", "1")
    wait_until(lambda: "started attempt 1" in tasks.marks(log))
    assert status_of(stubborn.id) == Status.RUNNING  # claimed with it, waiting behind it
    assert task_cancel(task_id=stubborn.id) == Status.RUNNING
    assert "stubborn started" not in tasks.marks(stubborn_log)
    assert task_cancel(task_id=cooperative.id) == Status.RUNNING
    wait_until(lambda: status_of(cooperative.id) == Status.CANCELLED, timeout=10)
    assert "saw cancel" in tasks.marks(log)
    row = TaskRecord.objects.get(id=cooperative.id)
    assert row.errors[-1]["exception_class_path"] == "executor.exceptions.TaskCancelled"
    # The stubborn one then runs, ignores the request, and only its timeout stops it.
    wait_until(lambda: status_of(stubborn.id) == Status.CANCELLED, timeout=10)
    row = TaskRecord.objects.get(id=stubborn.id)
    assert row.attempts == 1  # stopped by its timeout, and not retried
    assert row.errors[-1]["exception_class_path"] == "executor.exceptions.TaskTimeout"
    assert tasks.marks(stubborn_log) == ["stubborn started"]
    # Positive control: the worker runs a task of the same queue and priority enqueued
    # after "never", so it has had every chance to run it.
    control = tasks.record.enqueue(log, "control")
    wait_until(lambda: status_of(control.id) == Status.SUCCESSFUL, timeout=10)
    assert "control" in tasks.marks(log) and "never" not in tasks.marks(log)
    assert status_of(never.id) == Status.CANCELLED
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
