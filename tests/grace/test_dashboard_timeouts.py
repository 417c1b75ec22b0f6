"""One count of timeouts per stage, model timeouts included: a reply whose model timed
out is a respond timeout on the dashboard and on its request page alike (the reply's own
``metadata.stages.respond`` stays ``ok``: docs/operations.md)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from grace.audit_writer import audit_flush
from grace.metrics.buffer import metrics_flush, metrics_reset
from grace.metrics.models import MetricRollup
from tests.chat.llm_fixtures import Scripted, Upstream, chunk, sse

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "metrics"])

MODEL_NOTE = "the model timed out (llm_timeout); metadata.stages says ok"


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("root", password="pw-root-123")
    client = Client()
    client.force_login(user)
    return client


def post_chat(message: str) -> dict[str, Any]:
    response = Client().post(
        "/api/chat/", data=json.dumps({"message": message}), content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def text(response: Any) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def test_a_model_timeout_is_one_respond_timeout_on_the_dashboard_and_the_request_page(
    ops_chat, staff, upstream: Upstream, use_backends
) -> None:
    use_backends("openai", URL=upstream.url)
    # The model gets about 2.5 s: time for the first pieces on a busy machine.
    ops_chat.GRACE_CHAT = {
        **ops_chat.GRACE_CHAT,
        "PIPELINE_DEADLINE": 8.0,
        "STAGE_TIMEOUTS": {**ops_chat.GRACE_CHAT["STAGE_TIMEOUTS"], "respond": 3.0},
    }
    metrics_flush(5.0)
    MetricRollup.objects.using("metrics").all().delete()
    metrics_reset()
    upstream.add(
        Scripted(body=[10.0, *sse(chunk("late", "stop"))]),  # nothing in time: the fallback
        Scripted(body=sse(*[x for _ in range(200) for x in (chunk("Slow. "), 0.05)])),  # cut
    )
    silent = post_chat("How do I run the executor worker?")
    cut = post_chat("Tell me everything about Grace.")
    assert {"llm_timeout", "response_fallback"} <= set(silent["metadata"]["flags"])
    assert {"llm_timeout", "response_truncated"} <= set(cut["metadata"]["flags"])
    for body in (silent, cut):  # what the API says of the stage is unchanged
        assert body["metadata"]["stages"]["respond"] == "ok"
    assert audit_flush(5.0) and metrics_flush(5.0)

    board = text(staff.get("/admin/ops/dashboard/", {"hours": "1"}))
    assert re.search(r"<td>respond</td><td>2</td><td>0</td>", board)
    assert '<td id="timeouts">2</td>' in board  # the panel's total of stage timeouts
    assert re.search(r'<span class="flag">llm_timeout</span></td><td>2</td>', board)
    for body in (silent, cut):
        page = text(staff.get("/admin/ops/request/", {"id": body["request_id"]}))
        assert (
            f'<td>respond</td> <td class="bad">timeout</td> <td class="muted">{MODEL_NOTE}</td>'
            in page
        )
        assert '<span class="flag">llm_timeout</span>' in page


def test_a_model_error_is_a_respond_error_and_a_stopped_reply_is_not_a_timeout(
    ops_chat, staff, upstream: Upstream, use_backends
) -> None:
    use_backends("openai", URL=upstream.url)
    metrics_flush(5.0)
    MetricRollup.objects.using("metrics").all().delete()
    metrics_reset()
    upstream.add(Scripted(status=400, body=[b'{"error": {"message": "bad"}}'], chunked=False))
    failed = post_chat("hello")
    assert "llm_error" in failed["metadata"]["flags"]
    upstream.add(Scripted(body=sse(chunk("Hi", "stop"))))
    fine = post_chat("hello again")
    assert fine["metadata"]["flags"] == [] and fine["metadata"]["backend"] == "primary"
    assert audit_flush(5.0) and metrics_flush(5.0)

    board = text(staff.get("/admin/ops/dashboard/", {"hours": "1"}))
    assert re.search(r"<td>respond</td><td>0</td><td>1</td>", board)
    page = text(staff.get("/admin/ops/request/", {"id": failed["request_id"]}))
    assert '<td>respond</td> <td class="bad">error</td>' in page
    page = text(staff.get("/admin/ops/request/", {"id": fine["request_id"]}))
    assert '<td>respond</td> <td class="ok">ok</td> <td class="muted"></td>' in page
