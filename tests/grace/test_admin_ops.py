"""The operator's admin: the request page tells the story of a real request, the
dashboard draws its charts, the live feed page, and the read-only audit log admin."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from grace.audit_writer import audit_flush
from grace.errorlog import errorlog_record
from grace.metrics.buffer import metric_record, metrics_flush, metrics_reset
from grace.metrics.models import MetricRollup
from grace.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "metrics"])

EXECUTOR_TASKS = {
    "default": {"BACKEND": "executor.backend.ExecutorBackend", "QUEUES": ["default"],
                "OPTIONS": {}}
}
FLAGGED = "Why does my login query say: SELECT name FROM users WHERE id = 7 OR 1=1"


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("root", password="pw-root-123")
    client = Client()
    client.force_login(user)
    return client


def post_chat(client: Client, message: str) -> dict[str, Any]:
    response = client.post("/api/chat/", data=json.dumps({"message": message}),
                           content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def text(response: Any) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def test_request_page_tells_the_story_of_a_real_request(seeded_rules, staff):
    seeded_rules.TASKS = EXECUTOR_TASKS  # tasks wait in the queue: no worker runs here
    seeded_rules.GRACE = {**seeded_rules.GRACE, "FAULTS": {"recall": "timeout"}}
    body = post_chat(Client(), FLAGGED)
    rid = body["request_id"]
    assert body["degraded"] is True
    errorlog_record(exc=RuntimeError("boom in a follow-up"), request_id=rid, wait=True)
    assert audit_flush(5.0) and metrics_flush(5.0)

    response = staff.get("/admin/ops/request/", {"id": rid})
    assert response.status_code == 200
    page = text(response)
    assert f"Request {rid}" in page
    assert "Degraded" in page
    assert re.search(r"<td>recall</td> <td class=\"bad\">timeout</td>", page)
    assert re.search(r"<td>inspect</td> <td class=\"\">flagged</td>", page)
    assert re.search(r"<td>followup</td> <td class=\"ok\">ok</td>", page)  # all five stages
    for flag in ("recall_failed", "security_alert"):
        assert f'<span class="flag">{flag}</span>' in page
    assert "WHERE id = 7 OR 1=1" in page  # the user's message
    assert "sql-injection-tautology" in page  # the security event's rule
    assert "learning_capture" in page and "causal_track" in page and "READY" in page
    assert "builtins.RuntimeError: boom in a follow-up" in page
    for action in ("chat.exchange", "security.event"):
        assert f"<td>{action}</td>" in page
    assert "<td>task.enqueued</td>" not in page  # the tasks' story is their rows (above)
    assert "POST api/chat/ -&gt; 200" in page  # its own HTTP metric, on the timeline
    exchange = AuditEntry.objects.get(request_id=rid, action="chat.exchange")
    assert exchange.payload["message_id"] == body["message_id"]
    assert "SELECT" not in json.dumps(exchange.payload)  # ids, never message contents


def test_a_reply_that_was_not_stored_still_has_its_story(seeded_rules, staff):
    seeded_rules.GRACE = {**seeded_rules.GRACE, "FAULTS": {"store": "error"}}
    body = post_chat(Client(), "How do I run the executor worker?")
    assert audit_flush(5.0)
    page = text(staff.get("/admin/ops/request/", {"id": body["request_id"]}))
    assert "no reply was stored" in page
    assert re.search(r"<td>store</td> <td class=\"bad\">error</td>", page)
    assert '<span class="flag">memory_store_failed</span>' in page


def test_unknown_request_id_says_so_and_lists_recent_requests(ops_chat, staff):
    seen = post_chat(Client(), "Hello there")["request_id"]
    assert audit_flush(5.0)  # the list comes from the audit log, written off the request
    response = staff.get("/admin/ops/request/", {"id": "no-such-request"})
    assert response.status_code == 200
    assert "Nothing was recorded with the request ID" in text(response)
    assert seen in text(response)


def test_operations_pages_are_for_staff_only(ops_chat):
    member = get_user_model().objects.create_user("member", password="pw-member-123")
    client = Client()
    client.force_login(member)
    for url in ("/admin/ops/request/", "/admin/ops/dashboard/", "/admin/ops/events/"):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_dashboard_draws_degraded_rate_timeouts_errors_and_queue(seeded_rules, staff):
    metrics_flush(5.0)
    MetricRollup.objects.using("metrics").all().delete()
    metrics_reset()
    client = Client()
    post_chat(client, "How do I run the executor worker?")
    seeded_rules.GRACE = {**seeded_rules.GRACE, "FAULTS": {"store": "timeout"}}
    post_chat(client, "What is Grace?")
    seeded_rules.GRACE = {**seeded_rules.GRACE, "FAULTS": {}}
    metric_record("queue_ready", 7, labels={"queue": "executor:default"})
    metric_record("errors_logged", labels={"exception_class": "builtins.RuntimeError"})
    assert metrics_flush(5.0)

    response = staff.get("/admin/ops/dashboard/", {"hours": "6"})
    assert response.status_code == 200
    page = text(response)
    assert page.count("<svg") >= 6 + 5  # six charts and one per stage
    assert '<td id="degraded-rate">50.0%</td>' in page
    assert '<span class="flag">memory_store_failed</span>' in page
    assert re.search(r"<td>store</td><td>1</td><td>0</td>", page)
    assert "<title>" in page and "max 7" in page  # the queue chart's scale
    index = staff.get("/admin/")
    assert "/admin/ops/dashboard/" in index.content.decode()


def test_live_events_page_connects_to_the_feed(staff):
    response = staff.get("/admin/ops/events/")
    assert response.status_code == 200
    assert "/ws/events/" in response.content.decode()


def test_audit_log_admin_is_read_only(ops_chat, staff):
    from grace.audit import AuditDraft, audit_append

    (entry,) = audit_append(entries=[AuditDraft(action="test.admin", request_id="rid-admin")])
    listing = staff.get("/admin/grace/auditentry/", {"q": "rid-admin"})
    assert listing.status_code == 200 and "test.admin" in listing.content.decode()
    assert "/admin/ops/request/?id=rid-admin" in listing.content.decode()
    change = staff.get(f"/admin/grace/auditentry/{entry.sequence}/change/")
    assert change.status_code == 200 and 'name="_save"' not in change.content.decode()
    assert staff.get("/admin/grace/auditentry/add/").status_code == 403
    assert staff.post(f"/admin/grace/auditentry/{entry.sequence}/delete/").status_code == 403
    assert AuditEntry.objects.filter(sequence=entry.sequence).exists()
