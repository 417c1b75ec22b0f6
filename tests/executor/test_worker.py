"""The worker in this process (``burst``: it returns once the queue is empty); it starts its
child processes, so these tests are slow."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from executor.compat import TaskResultStatus, task_finished, task_started
from executor.models import Status, TaskRecord
from executor.worker import Worker
from grace.request_id import request_id_reset, request_id_set
from tests.executor import tasks
from tests.executor.conftest import run_worker
from tests.timing import limit

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_results_of_sync_and_async_tasks_and_the_context(executor_options) -> None:
    added = tasks.add.enqueue(2, 3)
    async_added = tasks.async_add.enqueue(4, b=5)
    attempt = tasks.attempt_number.enqueue()
    assert run_worker() == 0
    assert tasks.add.get_result(added.id).return_value == 5
    assert tasks.async_add.get_result(async_added.id).return_value == 9
    result = tasks.attempt_number.get_result(attempt.id)
    assert result.return_value == 1 and result.attempts == 1


def test_results_of_every_json_shape_are_stored_as_returned(executor_options) -> None:
    """A batch of results is written in one statement (PostgreSQL: ``unnest`` of arrays, the
    values encoded to JSON text): each comes back as the task returned it, ``None`` too."""
    values = [None, 0, -1.5, True, "", "quote ' \" and \\ back", "ünïcode ✓",
              [], [1, [2, {"a": None}]], {}, {"k": "v", "n": [1, 2.5, False]}]
    results = [tasks.echo.enqueue(v) for v in values]
    assert run_worker() == 0
    stored = [tasks.echo.get_result(r.id) for r in results]
    assert [r.status for r in stored] == [TaskResultStatus.SUCCESSFUL] * len(values)
    assert [r.return_value for r in stored] == values
    assert TaskRecord.objects.filter(return_value__isnull=True).count() == 1  # SQL NULL


def test_a_hanging_task_is_timed_out_while_others_complete(executor_options, tmp_path) -> None:
    log = str(tmp_path / "runs")
    hanging = tasks.hang.enqueue(log)  # timeout=1, max_attempts=1, an endless sync loop
    others = [tasks.record.enqueue(log, f"t{i}") for i in range(20)]
    started = time.monotonic()
    assert run_worker(concurrency=2) == 0
    assert time.monotonic() - started < limit(15)  # the hung task is killed after 1 s
    row = TaskRecord.objects.get(id=hanging.id)
    assert row.status == Status.FAILED
    assert row.errors[0]["exception_class_path"] == "executor.exceptions.TaskTimeout"
    assert "timed out after 1s" in row.errors[0]["message"]
    assert all(tasks.record.get_result(o.id).status == TaskResultStatus.SUCCESSFUL
               for o in others)
    assert sorted(tasks.marks(log)) == sorted(["hang started", *[f"t{i}" for i in range(20)]])
    assert multiprocessing.active_children() == []  # the killed child was reaped, no leak


def test_failures_are_retried_with_backoff_until_they_succeed(executor_options, tmp_path) -> None:
    executor_options(retry_backoff=0.2, retry_backoff_max=5.0)
    log = tmp_path / "flaky"
    result = tasks.flaky.enqueue(str(log), 2)  # fails twice, then succeeds; max_attempts=3
    assert run_worker() == 0
    row = TaskRecord.objects.get(id=result.id)
    assert (row.status, row.attempts, row.return_value) == (Status.SUCCESSFUL, 3, 3)
    assert [e["message"] for e in row.errors] == ["failure 1", "failure 2"]
    assert all(e["exception_class_path"] == "builtins.RuntimeError" for e in row.errors)
    assert "Traceback" in row.errors[0]["traceback"]
    times = [float(t) for t in tasks.marks(log)]
    # Backoff steps of 0.2s then 0.4s, at least half of each step (jitter adds the rest).
    assert times[1] - times[0] >= 0.1
    assert times[2] - times[1] >= 0.2
    assert len(row.worker_ids) == 3


def test_a_task_failing_every_attempt_ends_failed_with_each_error(
    executor_options, tmp_path
) -> None:
    executor_options(retry_backoff=0.05)
    always = tasks.flaky.enqueue(str(tmp_path / "always"), 99)
    once = tasks.boom.enqueue()  # max_attempts=1
    assert run_worker() == 0
    row = TaskRecord.objects.get(id=always.id)
    assert (row.status, row.attempts, len(row.errors)) == (Status.FAILED, 3, 3)
    assert [e["attempt"] for e in row.errors] == [1, 2, 3]
    boom = tasks.boom.get_result(once.id)
    assert boom.status == TaskResultStatus.FAILED and boom.attempts == 1
    assert boom.errors[0].exception_class is ValueError


def test_signals_and_request_id_in_task_logs(executor_options, json_log) -> None:
    started: list[str] = []
    finished: list[tuple[str, str]] = []

    def on_started(sender, task_result, **kwargs) -> None:
        started.append(task_result.id)

    def on_finished(sender, task_result, **kwargs) -> None:
        finished.append((task_result.id, task_result.status))

    token = request_id_set("req-log-42")
    try:
        result = tasks.log_line.enqueue("hello")
    finally:
        request_id_reset(token)
    task_started.connect(on_started)
    task_finished.connect(on_finished)
    try:
        assert run_worker() == 0
    finally:
        task_started.disconnect(on_started)
        task_finished.disconnect(on_finished)
    assert started == [result.id]
    assert finished == [(result.id, TaskResultStatus.SUCCESSFUL)]
    lines = json_log()
    said = [line for line in lines if line["message"] == "task says hello"]
    assert said and said[0]["request_id"] == "req-log-42"
    states = [line for line in lines if line.get("task_id") == result.id]
    # The enqueue is logged at DEBUG (the row records it): INFO shows what the worker did.
    assert [s["message"].split(" ", 2)[2] for s in states] == ["started", "succeeded"]
    assert all(s["request_id"] == "req-log-42" for s in states)


def test_an_unimportable_task_path_fails_cleanly(executor_options) -> None:
    result = tasks.noop.enqueue()
    TaskRecord.objects.filter(id=result.id).update(task_path="tests.executor.tasks.gone",
                                                   max_attempts=1)
    assert run_worker() == 0
    row = TaskRecord.objects.get(id=result.id)
    assert row.status == Status.FAILED
    assert "ImportError" in row.errors[0]["exception_class_path"]


def test_deferred_tasks_wait_for_their_time(executor_options, tmp_path: Path) -> None:
    from datetime import timedelta

    from django.utils import timezone

    log = str(tmp_path / "runs")
    tasks.record.using(run_after=timezone.now() + timedelta(seconds=0.6)).enqueue(log, "late")
    tasks.record.enqueue(log, "now")
    assert run_worker(concurrency=1) == 0
    assert tasks.marks(log) == ["now", "late"]


@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_keeps_its_connection_between_polls(executor_options, monkeypatch) -> None:
    """With Django's default CONN_MAX_AGE of 0, closing old connections after each empty
    poll meant a new connection (a new PostgreSQL backend) every poll; a broken one still
    goes."""
    from types import SimpleNamespace

    from django.db import connections

    connection = connections["default"]
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)  # the shipped default
    connection.close()
    worker = Worker(interval=0.01)
    worker.pool = SimpleNamespace(free_slots=lambda: 2, busy=lambda: [])
    worker._sync(time.monotonic())  # the queue is empty: the claim finds nothing
    first = connection.connection
    assert first is not None and worker.exhausted
    worker._sync(time.monotonic() + 1)
    assert connection.connection is first  # kept
    connection.errors_occurred = True
    with monkeypatch.context() as broken:
        broken.setattr(connection, "is_usable", lambda: False)
        worker._sync(time.monotonic() + 2)  # closed as broken
    worker._sync(time.monotonic() + 3)  # and a fresh one
    assert connection.connection is not None and connection.connection is not first
