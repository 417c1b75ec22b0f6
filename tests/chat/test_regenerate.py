"""Regenerate: a message answered again through the whole pipeline, over REST and the
websocket; the earlier replies kept as alternatives, the transcript in order, another
owner's messages refused, the security stages run again, the migration links old rows."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import AsyncClient
from django.utils import timezone

from chat.backends.base import ReplyBackend, ReplyRequest, ReplyResult, TokenCallback
from chat.models import Message, SecurityEvent, SecurityRule
from tests.chat.conftest import post_chat
from tests.chat.test_inspection_policy import AWS_KEY, locations
from tests.chat.ws_helpers import receive_until, send_json, ws
from tests.e2e.slow_backend import WORDS

pytestmark = [pytest.mark.django_db(transaction=True)]

SEEN: list[ReplyRequest] = []
SLOW = {"BACKEND": "tests.e2e.slow_backend.SlowBackend", "OPTIONS": {"DELAY": 0.05}}


class Numbered(ReplyBackend):
    """Answers "Answer <n> to: <message>", n counting every request; keeps each request."""

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        SEEN.append(request)
        text = f"Answer {len(SEEN)} to: {request.message}"
        if on_token is not None:
            await on_token(text)
        return ReplyResult(text=text, backend=self.alias, model="numbered")


@pytest.fixture(autouse=True)
def numbered(roomy_timeouts: Any) -> Any:
    SEEN.clear()
    backends = {
        **roomy_timeouts.GRACE_CHAT["REPLY_BACKENDS"],
        "numbered": {"BACKEND": f"{__name__}.Numbered", "OPTIONS": {}},
        "slow": SLOW,
    }
    roomy_timeouts.GRACE_CHAT = {
        **roomy_timeouts.GRACE_CHAT,
        "REPLY_BACKENDS": backends,
        "REPLY_BACKEND": "numbered",
    }
    return roomy_timeouts


async def regenerate(client: AsyncClient, conversation: str, message: str, body: Any = None) -> Any:
    url = f"/api/chat/conversations/{conversation}/messages/{message}/regenerate"
    if body is None:  # no body at all
        return await client.generic("POST", url)
    return await client.post(url, data=json.dumps(body), content_type="application/json")


async def transcript(client: AsyncClient, conversation: str) -> dict[str, Any]:
    response = await client.get(f"/api/chat/conversations/{conversation}")
    assert response.status_code == 200, response.content
    return response.json()


async def test_rest_regenerate_keeps_the_earlier_replies_as_alternatives(client):
    first = (await post_chat(client, {"message": "first question"})).json()
    conversation = first["conversation_id"]
    second = (
        await post_chat(client, {"message": "second question", "conversation_id": conversation})
    ).json()
    assert second["response"] == "Answer 2 to: second question"

    # The first reply, answered again (by the reply's ID), then again (by the message's).
    again = await regenerate(client, conversation, first["message_id"])
    assert again.status_code == 200, again.content
    body = again.json()
    assert body["response"] == "Answer 3 to: first question"
    assert body["conversation_id"] == conversation
    assert body["message_id"] not in (first["message_id"], second["message_id"])
    assert body["metadata"]["stages"]["inspect"] == "ok"
    # Recall saw the conversation before the message only (nothing of it or after it).
    assert SEEN[-1].history == []

    shown = await transcript(client, conversation)
    assert shown["message_count"] == 4
    assert [(m["role"], m["content"]) for m in shown["messages"]] == [
        ("user", "first question"),
        ("assistant", "Answer 3 to: first question"),
        ("user", "second question"),
        ("assistant", "Answer 2 to: second question"),
    ]
    question_id = shown["messages"][0]["id"]
    assert shown["messages"][1]["reply_to"] == question_id
    assert [a["content"] for a in shown["messages"][1]["alternatives"]] == [
        "Answer 1 to: first question"
    ]
    assert shown["messages"][1]["alternatives"][0]["id"] == first["message_id"]
    assert shown["messages"][3]["alternatives"] == []
    assert shown["messages"][0]["alternatives"] == [] and shown["messages"][0]["reply_to"] is None

    third = await regenerate(client, conversation, question_id, {"domain": "knowledge"})
    assert third.status_code == 200, third.content
    assert third.json()["domain"] == "knowledge"
    shown = await transcript(client, conversation)
    assert [m["content"] for m in shown["messages"]][1] == "Answer 4 to: first question"
    assert [a["content"] for a in shown["messages"][1]["alternatives"]] == [
        "Answer 1 to: first question",
        "Answer 3 to: first question",
    ]
    listing = (await client.get("/api/chat/conversations")).json()
    assert listing["items"][0]["message_count"] == 4
    assert await Message.objects.filter(conversation_id=conversation).acount() == 6

    # The last message answered again: recall saw the (current) exchange before it.
    await regenerate(client, conversation, second["message_id"])
    assert SEEN[-1].history == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "Answer 4 to: first question"},
    ]
    # A new message after all this: history is the transcript, no alternatives.
    await post_chat(client, {"message": "third question", "conversation_id": conversation})
    assert [h["content"] for h in SEEN[-1].history] == [
        "first question",
        "Answer 4 to: first question",
        "second question",
        "Answer 5 to: second question",
    ]


async def test_another_owners_message_is_not_found(client, django_user_model):
    mine = (await post_chat(client, {"message": "my question"})).json()
    stranger = AsyncClient()
    theirs = (await post_chat(stranger, {"message": "their question"})).json()
    before = await Message.objects.acount()

    cases = [
        (theirs["conversation_id"], theirs["message_id"]),  # their conversation
        (mine["conversation_id"], theirs["message_id"]),  # their message, in my conversation
        (theirs["conversation_id"], mine["message_id"]),  # my message, wrong conversation
        (mine["conversation_id"], str(uuid.uuid4())),  # no such message
    ]
    for conversation, message in cases:
        response = await regenerate(client, conversation, message)
        assert response.status_code == 404, response.content
        body = response.json()
        assert body["error"] == "not_found"
        assert body["message"] == "No message of yours has this ID."
        assert body["request_id"] == response.headers["X-Request-ID"]
    assert await Message.objects.acount() == before
    assert len(SEEN) == 2  # no model was asked

    bad = await regenerate(client, mine["conversation_id"], mine["message_id"], {"domain": "x"})
    assert bad.status_code == 422
    unknown = await regenerate(client, mine["conversation_id"], mine["message_id"], {"dom": "x"})
    assert unknown.status_code == 422


async def test_a_blocked_message_cannot_be_answered_again(client):
    await SecurityRule.objects.acreate(name="no-pineapple", pattern="pineapple", action="block")
    blocked = (await post_chat(client, {"message": "pineapple please"})).json()
    assert "blocked" in blocked["metadata"]["flags"]
    response = await regenerate(client, blocked["conversation_id"], blocked["message_id"])
    assert response.status_code == 422, response.content
    detail = response.json()["details"][0]
    assert detail["field"] == "message_id" and detail["problem"] == "not_regenerable"
    assert "blocked by a security rule" in detail["message"]


async def test_regenerate_is_inspected_again_and_its_secret_stays_masked(client, seeded):
    first = await post_chat(client, {"message": f"Why does boto3 refuse my key {AWS_KEY}?"})
    assert first.status_code == 200, first.content
    first = first.json()
    assert AWS_KEY not in SEEN[-1].message
    # A rule added since the message was sent matches it now: inspection runs again.
    await SecurityRule.objects.acreate(name="test-boto", pattern="boto3", action="flag")

    again = await regenerate(client, first["conversation_id"], first["message_id"])
    assert again.status_code == 200, again.content
    body = again.json()
    assert body["metadata"]["stages"]["inspect"] == "flagged"
    assert "security_alert" in body["metadata"]["flags"]
    assert await SecurityEvent.objects.filter(
        rule_name="test-boto", request_id=body["request_id"]
    ).aexists()
    # The model got the masked text again, never the key; no table holds the key.
    assert "boto3" in SEEN[-1].message and AWS_KEY not in SEEN[-1].message
    assert AWS_KEY not in body["response"]
    assert await locations(AWS_KEY) == []


async def test_websocket_regenerate_frame_and_a_stopped_alternative(client, numbered):
    communicator = ws()
    connected, _ = await communicator.connect()
    assert connected
    try:
        await send_json(communicator, {"type": "message", "message": "tell me"})
        first, _ = await receive_until(communicator, "done")

        await send_json(communicator, {"type": "regenerate", "message_id": first["message_id"]})
        done, before = await receive_until(communicator, "done")
        assert before[0] == {
            "type": "start",
            "request_id": done["request_id"],
            "conversation_id": first["conversation_id"],
        }
        assert [f["text"] for f in before if f["type"] == "token"] == ["Answer 2 to: tell me"]
        assert done["response"] == "Answer 2 to: tell me"
        assert done["message_id"] != first["message_id"]

        # The slow writer, stopped mid-way: the partial reply is the current one.
        numbered.GRACE_CHAT = {
            **numbered.GRACE_CHAT,
            "REPLY_BACKEND": "slow",
            "PIPELINE_DEADLINE": 10.0,
        }
        await send_json(
            communicator,
            {
                "type": "regenerate",
                "message_id": done["message_id"],
                "conversation_id": first["conversation_id"],
            },
        )
        await receive_until(communicator, "token")
        await send_json(communicator, {"type": "stop"})
        stopped, _ = await receive_until(communicator, "done")
        assert "stopped" in stopped["metadata"]["flags"]
        assert 0 < len(stopped["response"]) < len(" ".join(WORDS))

        # Errors: another conversation's id, an unknown message, a bad frame.
        await send_json(communicator, {"type": "regenerate", "message_id": str(uuid.uuid4())})
        error, _ = await receive_until(communicator, "error")
        assert error["status"] == 404 and error["error"] == "not_found"
        await send_json(communicator, {"type": "regenerate", "message_id": "nope"})
        error, _ = await receive_until(communicator, "error")
        assert error["status"] == 422 and error["details"][0]["field"] == "message_id"
    finally:
        await communicator.disconnect()

    rows = [
        (m.content, m.superseded)
        async for m in Message.objects.filter(role="assistant").order_by("created")
    ]
    assert rows == [
        ("Answer 1 to: tell me", True),
        ("Answer 2 to: tell me", True),
        (stopped["response"], False),
    ]


async def test_a_message_of_another_websocket_owner_is_not_found(client):
    theirs = (await post_chat(client, {"message": "not yours"})).json()
    communicator = ws()
    await communicator.connect()
    try:
        await send_json(communicator, {"type": "regenerate", "message_id": theirs["message_id"]})
        error, frames = await receive_until(communicator, "error")
        assert error["status"] == 404 and error["message"] == "No message of yours has this ID."
        assert not [f for f in frames if f["type"] == "token"]
    finally:
        await communicator.disconnect()
    assert await Message.objects.acount() == 2


def test_the_migration_links_every_stored_reply_to_its_message():
    executor = MigrationExecutor(connection)
    before = list(executor.loader.get_migration("chat", "0009_message_alternatives").dependencies)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldConversation = old.get_model("chat", "Conversation")
    OldMessage = old.get_model("chat", "Message")
    now = timezone.now()
    conversation = OldConversation.objects.create(session_key="s", created=now, updated=now)
    rows = []
    for index, rid in enumerate(["r1", "r2", "r1"]):  # a request ID sent twice
        at = now + timedelta(seconds=index)
        rows += [
            OldMessage.objects.create(
                conversation=conversation,
                role="user",
                content=f"q{index}",
                request_id=rid,
                created=at,
            ),
            OldMessage.objects.create(
                conversation=conversation,
                role="assistant",
                content=f"a{index}",
                request_id=rid,
                created=at + timedelta(milliseconds=5),
            ),
        ]
    orphan = OldMessage.objects.create(
        conversation=conversation,
        role="assistant",
        content="orphan",
        request_id="",
        created=now + timedelta(seconds=9),
    )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert Message.objects.count() == 7
    links = dict(Message.objects.filter(role="assistant").values_list("content", "reply_to"))
    assert links == {
        "a0": rows[0].pk,
        "a1": rows[2].pk,
        "a2": rows[4].pk,
        "orphan": None,
    }
    assert not Message.objects.filter(superseded=True).exists()
    assert orphan.pk in set(Message.objects.values_list("pk", flat=True))
