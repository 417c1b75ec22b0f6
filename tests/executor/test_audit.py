"""What the audit log keeps of tasks (docs/operations.md, "What is audited"): an operator's
cancel and retry from the admin, with who did it; not a task's own state changes, which
its row holds and the admin's request page shows."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from executor.models import Status, TaskRecord
from grace.audit import audit_verify
from grace.audit_writer import audit_flush
from grace.models import AuditEntry
from grace.request_id import request_id_reset, request_id_set
from tests.executor import tasks
from tests.executor.conftest import run_worker

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "metrics"])

CHANGELIST = "admin:executor_taskrecord_changelist"


@pytest.fixture
def root() -> tuple[Client, int]:
    user = get_user_model().objects.create_superuser("root", password="pw-root-123")
    client = Client()
    client.force_login(user)
    return client, user.pk


def task_entries(*task_ids: str) -> list[AuditEntry]:
    """The entries about these tasks (the log outlives each test: it refuses deletes)."""
    assert audit_flush(5.0)
    resources = [f"task:{task_id}" for task_id in task_ids]
    return list(AuditEntry.objects.filter(resource__in=resources).order_by("sequence"))


@pytest.mark.slow  # a Worker's children
def test_a_task_run_is_not_audited_and_its_row_tells_the_request_page(
    executor_options, root
) -> None:
    staff, _ = root
    token = request_id_set("rid-audit-task")
    try:
        added = tasks.add.enqueue(2, 3)
    finally:
        request_id_reset(token)
    assert run_worker() == 0
    assert TaskRecord.objects.get(id=added.id).status == Status.SUCCESSFUL

    assert task_entries(added.id) == []  # enqueued, started, finished: none is in the chain
    assert not AuditEntry.objects.filter(request_id="rid-audit-task").exists()
    page = re.sub(r"\s+", " ", staff.get("/admin/ops/request/",
                                         {"id": "rid-audit-task"}).content.decode())
    assert "Tasks enqueued" in page
    assert added.id in page and "SUCCESSFUL" in page
    assert "add SUCCESSFUL after 1 attempt(s)" in page  # on the timeline, from the row


def test_cancel_and_retry_from_the_admin_are_audited_with_the_staff_user(
    executor_options, root
) -> None:
    staff, pk = root
    waiting = tasks.noop.enqueue()
    running = tasks.noop.enqueue()
    TaskRecord.objects.filter(id=running.id).update(status=Status.RUNNING, worker_id="w")
    done = tasks.noop.enqueue()
    TaskRecord.objects.filter(id=done.id).update(status=Status.SUCCESSFUL)
    rows = {t.id: t.pk for t in TaskRecord.objects.all()}

    response = staff.post(reverse(CHANGELIST), {
        "action": "cancel_tasks", "_selected_action": [rows[waiting.id], rows[running.id],
                                                       rows[done.id]],
    })
    assert response.status_code == 302
    cancels = task_entries(waiting.id, running.id, done.id)
    # One entry per task the cancel changed; the finished one was left alone.
    assert {(e.action, e.resource, e.payload["status"]) for e in cancels} == {
        ("task.cancel", f"task:{waiting.id}", "CANCELLED"),
        ("task.cancel", f"task:{running.id}", "RUNNING"),
    }
    assert {e.actor for e in cancels} == {f"user:{pk}"}
    assert all(e.payload["task"] == "noop" and e.payload["cancel_requested"] for e in cancels)

    response = staff.post(reverse(CHANGELIST), {
        "action": "retry_tasks", "_selected_action": [rows[waiting.id], rows[done.id]],
    })
    assert response.status_code == 302
    retries = [e for e in task_entries(waiting.id, done.id) if e.action == "task.retry"]
    assert [(e.resource, e.actor, e.payload["status"]) for e in retries] == [
        (f"task:{waiting.id}", f"user:{pk}", "READY"),
    ]
    assert TaskRecord.objects.get(id=waiting.id).status == Status.READY
    assert audit_verify().ok


def test_a_task_enqueued_by_staff_over_the_api_is_audited(executor_options, root, settings):
    staff, pk = root
    settings.EXECUTOR = {**settings.EXECUTOR, "API_TASKS": ["tests.executor.tasks.add"]}
    response = staff.post("/api/tasks/", data={"task": "tests.executor.tasks.add",
                                               "args": [1, 2], "priority": 5},
                          content_type="application/json")
    assert response.status_code == 202, response.content
    task_id = response.json()["id"]
    [entry] = task_entries(task_id)
    assert (entry.action, entry.actor, entry.resource) == (
        "task.enqueue", f"user:{pk}", f"task:{task_id}")
    assert entry.payload == {"task": "tests.executor.tasks.add", "queue": "default",
                             "priority": 5}
    assert entry.request_id == TaskRecord.objects.get(id=task_id).request_id != ""
