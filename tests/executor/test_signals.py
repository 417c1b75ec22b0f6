"""The Tasks API's own signals, each sent with the enqueuing request's ID bound."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.dispatch import Signal
from django.utils import timezone
from django_tasks.signals import task_enqueued, task_finished, task_started

from executor.backend import ExecutorBackend
from executor.compat import TaskResultStatus
from executor.models import Status, TaskRecord
from executor.services import task_cancel, task_claim, task_reclaim_stale
from grace.request_id import request_id_get, request_id_reset, request_id_set
from tests.executor import tasks
from tests.executor.conftest import run_worker

Heard = list[tuple[str, str, Any, str | None]]


@pytest.fixture
def heard() -> Iterator[Heard]:
    """(signal, task id, status, request ID bound) for every task signal sent."""
    found: Heard = []
    receivers: list[tuple[Signal, Callable[..., None]]] = []
    for name, signal in (("enqueued", task_enqueued), ("started", task_started),
                         ("finished", task_finished)):
        def receiver(sender: Any, task_result: Any, name: str = name, **kwargs: Any) -> None:
            assert sender is ExecutorBackend
            found.append((name, task_result.id, task_result.status, request_id_get()))

        signal.connect(receiver)
        receivers.append((signal, receiver))
    yield found
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def enqueue_in_request(request_id: str, enqueue: Callable[[], Any]) -> Any:
    token = request_id_set(request_id)
    try:
        return enqueue()
    finally:
        request_id_reset(token)


@pytest.mark.django_db
def test_enqueue_sends_task_enqueued_in_the_request(executor_options, heard) -> None:
    plain = enqueue_in_request("req-sync", lambda: tasks.noop.enqueue())
    awaited = enqueue_in_request("req-async", lambda: async_to_sync(tasks.noop.aenqueue)())
    outside = tasks.noop.enqueue()
    assert heard == [
        ("enqueued", plain.id, TaskResultStatus.READY, "req-sync"),
        ("enqueued", awaited.id, TaskResultStatus.READY, "req-async"),
        ("enqueued", outside.id, TaskResultStatus.READY, None),
    ]


@pytest.mark.django_db
def test_a_failing_receiver_neither_fails_the_enqueue_nor_silences_others(
    executor_options, heard, caplog
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver broke")

    task_enqueued.connect(broken)
    try:
        result = tasks.noop.enqueue()
    finally:
        task_enqueued.disconnect(broken)
    assert TaskRecord.objects.filter(id=result.id, status=Status.READY).exists()
    assert [h[:2] for h in heard] == [("enqueued", result.id)]
    assert "receiver broke" in caplog.text


@pytest.mark.django_db
def test_cancelling_a_ready_task_sends_task_finished(executor_options, heard) -> None:
    result = enqueue_in_request("req-cancel", lambda: tasks.noop.enqueue())
    heard.clear()
    assert task_cancel(task_id=result.id) == Status.CANCELLED
    assert heard == [("finished", result.id, TaskResultStatus.FAILED, "req-cancel")]
    assert request_id_get() is None
    assert task_cancel(task_id=result.id) == Status.CANCELLED  # already finished: no signal
    assert len(heard) == 1


@pytest.mark.django_db
def test_reclaiming_sends_task_finished_only_for_tasks_out_of_attempts(
    executor_options, heard
) -> None:
    again = enqueue_in_request("req-again", lambda: tasks.noop.enqueue())
    spent = enqueue_in_request("req-spent", lambda: tasks.boom.enqueue())  # max_attempts=1
    task_claim(worker_id="w1", backend="default", queues=["default"], limit=10,
               lease_seconds=30)
    TaskRecord.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    heard.clear()
    assert {r.id for r in task_reclaim_stale(worker_id="w2")} == {again.id, spent.id}
    assert heard == [("finished", spent.id, TaskResultStatus.FAILED, "req-spent")]


@pytest.mark.slow  # the worker starts its child processes
@pytest.mark.django_db(transaction=True)
def test_the_worker_sends_started_and_finished_with_the_task_request_id(
    executor_options, heard
) -> None:
    ok = enqueue_in_request("req-ok", lambda: tasks.add.enqueue(1, 2))
    failed = enqueue_in_request("req-boom", lambda: tasks.boom.enqueue())
    other = tasks.noop.using(queue_name="other").enqueue()
    queues: dict[str, str] = {}

    def queue_of(sender: Any, task_result: Any, **kwargs: Any) -> None:
        queues[task_result.id] = task_result.task.queue_name

    task_finished.connect(queue_of)
    try:
        assert run_worker() == 0
    finally:
        task_finished.disconnect(queue_of)
    assert queues == {ok.id: "default", failed.id: "default", other.id: "other"}
    by_task = {(name, task_id): (status, rid) for name, task_id, status, rid in heard}
    assert by_task == {
        ("enqueued", ok.id): (TaskResultStatus.READY, "req-ok"),
        ("enqueued", failed.id): (TaskResultStatus.READY, "req-boom"),
        ("enqueued", other.id): (TaskResultStatus.READY, None),
        ("started", ok.id): (TaskResultStatus.RUNNING, "req-ok"),
        ("started", failed.id): (TaskResultStatus.RUNNING, "req-boom"),
        ("started", other.id): (TaskResultStatus.RUNNING, None),
        ("finished", ok.id): (TaskResultStatus.SUCCESSFUL, "req-ok"),
        ("finished", failed.id): (TaskResultStatus.FAILED, "req-boom"),
        ("finished", other.id): (TaskResultStatus.SUCCESSFUL, None),
    }
    assert len(heard) == 9
    assert request_id_get() is None
