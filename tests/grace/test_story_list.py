"""The list of recent requests on the request page: each row says who sent it, the start
of its message (as stored: its secrets masked) and whether the reply was degraded; not
the newest audit action of each (it said "task.finished" on every row)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.models import Message
from grace.audit_writer import audit_flush
from grace.auth import api_token_create

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "metrics"])

AWS_KEY = "AKIAZ3MX5Q7RLT2WB4KD"
LEAKY = f"Our deploy fails, the access key is {AWS_KEY} and the secret was rotated yesterday."


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("root", password="pw-root-123")
    client = Client()
    client.force_login(user)
    return client


def post_chat(message: str, **headers: str) -> dict[str, Any]:
    response = Client().post(
        "/api/chat/",
        data=json.dumps({"message": message}),
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == 200, response.content
    return response.json()


def recent_rows(page: str) -> dict[str, list[str]]:
    """{request ID: [time, who, message, reply]} of the list's table."""
    rows = {}
    for row in re.findall(r'<tr class="recent-request">(.*?)</tr>', page, re.S):
        cells = [
            re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        rows[cells[-1]] = [re.sub(r"\s+", " ", c) for c in cells[:-1]]
    return rows


def test_recent_requests_show_who_the_masked_start_and_whether_degraded(
    seeded_rules, staff
) -> None:
    ada = get_user_model().objects.create_user("ada", password="pw-ada-123")
    raw_token = api_token_create(user=ada, name="ci")[1]
    leaky = post_chat(LEAKY, Authorization=f"Bearer {raw_token}")
    seeded_rules.GRACE = {**seeded_rules.GRACE, "FAULTS": {"recall": "timeout"}}
    slow = post_chat("How do I run the executor worker?")
    assert (leaky["degraded"], slow["degraded"]) == (False, True)
    assert audit_flush(5.0)

    page = staff.get("/admin/ops/request/").content.decode()
    assert AWS_KEY not in page  # nor any part of it
    assert AWS_KEY[4:12] not in page
    rows = recent_rows(page)
    stored = Message.objects.get(request_id=leaky["request_id"], role="user").content
    assert AWS_KEY not in stored and "[REDACTED:" in stored
    who, start, reply = rows[leaky["request_id"]][1:]
    assert who == f"user:{ada.pk} (ada) via token"
    assert start == stored[:59] + "…" and "[REDACTED:" in start
    assert reply == "ok"
    who, start, reply = rows[slow["request_id"]][1:]
    assert re.fullmatch(r"anonymous:[0-9a-f]{16}", who)
    assert start == "How do I run the executor worker?"
    assert reply == "degraded"
    assert "task.finished" not in rows[leaky["request_id"]] + rows[slow["request_id"]]


def test_an_unstored_message_is_listed_without_its_text(seeded_rules, staff) -> None:
    """The store stage failed: no text to show (the audit entry never holds it), but who
    and the degraded reply are still there."""
    seeded_rules.GRACE = {**seeded_rules.GRACE, "FAULTS": {"store": "error"}}
    body = post_chat(f"Please keep this safe: {AWS_KEY}")
    assert audit_flush(5.0)
    page = staff.get("/admin/ops/request/", {"id": "nothing-here"}).content.decode()
    assert AWS_KEY not in page
    who, message, reply = recent_rows(page)[body["request_id"]][1:]
    assert re.fullmatch(r"anonymous:[0-9a-f]{16}", who)
    assert message == "chat message (not stored)" and reply == "degraded"
