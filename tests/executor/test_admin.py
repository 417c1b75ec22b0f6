from __future__ import annotations

import json

import pytest
from django.test import RequestFactory
from django.urls import reverse

from executor.exceptions import QueueFull
from executor.models import Status, TaskRecord
from executor.services import task_claim
from grace.request_id import request_id_reset, request_id_set
from tests.executor import tasks

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:executor_taskrecord_changelist"


def enqueue_with_request_id(request_id: str):
    token = request_id_set(request_id)
    try:
        return tasks.add.enqueue(1, 2)
    finally:
        request_id_reset(token)


def test_changelist_shows_queue_figures_filters_and_search(executor_options, admin_client):
    first = enqueue_with_request_id("req-admin-1")
    enqueue_with_request_id("req-admin-2")
    tasks.noop.using(queue_name="other", priority=9).enqueue()
    task_claim(worker_id="w", backend="default", queues=["other"], limit=5, lease_seconds=30)
    TaskRecord.objects.filter(id=first.id).update(status=Status.FAILED)

    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert 'id="executor-queue-figures"' in page
    assert '<tr class="queue-default"><td>default</td><td>default</td><td class="ready">1</td>'\
        '<td class="running">0</td><td class="finished">1</td>' in page
    assert '<td class="ready">0</td><td class="running">1</td>' in page  # the "other" queue

    found = admin_client.get(reverse(CHANGELIST), {"q": "req-admin-2"}).content.decode()
    assert "req-admin-2" in found and first.id not in found
    by_id = admin_client.get(reverse(CHANGELIST), {"q": first.id}).content.decode()
    assert first.id in by_id
    for params in ({"status__exact": "FAILED"}, {"queue_name": "other"}, {"priority": "9"},
                   {"task_name": "add"}):
        assert admin_client.get(reverse(CHANGELIST), params).status_code == 200
    failed = admin_client.get(reverse(CHANGELIST), {"status__exact": "FAILED"}).content.decode()
    assert first.id in failed and "req-admin-2" not in failed


def test_change_page_is_read_only_with_args_and_traceback(executor_options, admin_client):
    result = tasks.add.enqueue(40, 2)
    TaskRecord.objects.filter(id=result.id).update(
        status=Status.FAILED,
        errors=[{"attempt": 1, "exception_class_path": "builtins.ValueError",
                 "message": "bad <input>", "traceback": "Traceback: line 1"}],
    )
    row = TaskRecord.objects.get(id=result.id)
    page = admin_client.get(
        reverse("admin:executor_taskrecord_change", args=[row.sequence])
    ).content.decode()
    assert "Traceback: line 1" in page and "bad &lt;input&gt;" in page
    assert "40" in page
    assert 'name="priority"' not in page  # nothing editable
    assert admin_client.get(reverse("admin:executor_taskrecord_add")).status_code == 403


def test_retry_and_cancel_actions(executor_options, admin_client):
    failed = tasks.noop.enqueue()
    ready = tasks.noop.enqueue()
    TaskRecord.objects.filter(id=failed.id).update(status=Status.FAILED, attempts=3)
    seqs = {r.id: r.sequence for r in TaskRecord.objects.all()}

    response = admin_client.post(reverse(CHANGELIST), {
        "action": "cancel_tasks", "_selected_action": [seqs[ready.id]],
    }, follow=True)
    assert "Cancel: 1 cancelled." in response.content.decode()
    assert TaskRecord.objects.get(id=ready.id).status == Status.CANCELLED

    response = admin_client.post(reverse(CHANGELIST), {
        "action": "retry_tasks", "_selected_action": list(seqs.values()),
    }, follow=True)
    assert "2 task(s) sent back to the queue" in response.content.decode()
    assert set(TaskRecord.objects.values_list("status", "attempts")) == {(Status.READY, 0)}


def test_queue_full_maps_to_503_with_retry_after() -> None:
    import grace.urls  # noqa: F401 - the composition root installs the handler
    from grace.api import api

    token = request_id_set("req-full")
    try:
        response = api.on_exception(RequestFactory().post("/api/x"), QueueFull("default", 10, 7))
    finally:
        request_id_reset(token)
    assert response.status_code == 503
    assert response["Retry-After"] == "7"
    body = json.loads(response.content)
    assert body["error"] == "queue_full" and body["request_id"] == "req-full"
    assert body["details"] == [{"queue": "default", "max_pending": 10}]
