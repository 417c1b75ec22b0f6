"""POST /api/chat/ input validation: 422 with one detail per problem, nothing stored."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chat.models import Conversation, Message, SecurityEvent
from tests.chat.conftest import bearer, post_chat

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("roomy_timeouts"),
]


async def counts() -> tuple[int, int, int]:
    def read() -> tuple[int, int, int]:
        return Conversation.objects.count(), Message.objects.count(), SecurityEvent.objects.count()

    return await sync_to_async(read)()


async def assert_rejected(response: Any, *fields: str) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert sorted(d["field"] for d in body["details"]) == sorted(fields)
    assert await counts() == (0, 0, 0)
    return body["details"]


@pytest.mark.parametrize(
    ("message", "problem"),
    [("", "blank"), ("   \n\t  ", "blank"), ("x" * 4001, "string_too_long")],
)
async def test_bad_message_lengths_are_rejected(seeded, client, message, problem):
    details = await assert_rejected(await post_chat(client, {"message": message}), "message")
    assert details[0]["problem"] == problem
    if problem == "string_too_long":
        assert details[0]["limit"] == 4000
        assert "x" * 200 not in json.dumps(details)  # a huge input is never echoed back


@pytest.mark.parametrize("message", ["x", "y" * 4000, "  " + "z" * 4000 + "  \n"])
async def test_one_and_4000_characters_are_accepted(seeded, client, message):
    response = await post_chat(client, {"message": message})
    assert response.status_code == 200, response.content
    stored = await sync_to_async(
        lambda: Message.objects.filter(role="user").values_list("content", flat=True).first()
    )()
    assert stored == message.strip()


async def test_multibyte_characters_count_as_characters(seeded, client):
    emoji = "😀" * 4000  # 16000 bytes of UTF-8, 4000 characters
    assert (await post_chat(client, {"message": emoji})).status_code == 200
    accented = "é" * 4001
    await Message.objects.all().adelete()
    await Conversation.objects.all().adelete()
    details = await assert_rejected(await post_chat(client, {"message": accented}), "message")
    assert details[0]["problem"] == "string_too_long"


async def test_missing_message(seeded, client):
    details = await assert_rejected(await post_chat(client, {"domain": "all"}), "message")
    assert details[0]["problem"] == "missing"


@pytest.mark.parametrize("value", [123, None, ["hi"], {"text": "hi"}, True])
async def test_wrong_typed_message(seeded, client, value):
    details = await assert_rejected(await post_chat(client, {"message": value}), "message")
    assert details[0]["problem"] == "string_type"


async def test_unknown_fields_are_rejected(seeded, client):
    details = await assert_rejected(
        await post_chat(client, {"message": "hi", "conversation": "x", "temperature": 2}),
        "conversation", "temperature",
    )
    assert {d["problem"] for d in details} == {"extra_forbidden"}


async def test_bad_domain(seeded, client):
    details = await assert_rejected(
        await post_chat(client, {"message": "hi", "domain": "astrology"}), "domain"
    )
    assert details[0]["problem"] == "literal_error"
    assert "transcendence" in details[0]["expected"]


@pytest.mark.parametrize("value", ["not-a-uuid", "1234", 42])
async def test_bad_conversation_id(seeded, client, value):
    details = await assert_rejected(
        await post_chat(client, {"message": "hi", "conversation_id": value}), "conversation_id"
    )
    assert details[0]["problem"] in {"uuid_parsing", "uuid_type"}


async def test_every_problem_is_reported_at_once(seeded, client):
    await assert_rejected(
        await post_chat(
            client, {"message": " ", "domain": 7, "conversation_id": "x", "extra": 1}
        ),
        "message", "domain", "conversation_id", "extra",
    )


async def test_unknown_conversation_is_rejected(seeded, client):
    details = await assert_rejected(
        await post_chat(client, {"message": "hi", "conversation_id": str(uuid.uuid4())}),
        "conversation_id",
    )
    assert details[0]["problem"] == "not_found"


async def test_someone_elses_conversation_is_rejected_like_an_unknown_one(
    seeded, client, token, other_user
):
    from grace.auth import api_token_create

    other_token = (await sync_to_async(api_token_create)(user=other_user))[1]
    theirs = await post_chat(client, {"message": "hello"}, **bearer(other_token))
    their_id = theirs.json()["conversation_id"]
    before = await counts()
    response = await post_chat(
        client, {"message": "let me in", "conversation_id": their_id}, **bearer(token)
    )
    assert response.status_code == 422
    assert response.json()["details"][0]["problem"] == "not_found"
    assert await counts() == before


@pytest.mark.parametrize("raw", ["{not json", '"just a string"', "[1, 2]"])
async def test_body_that_is_not_an_object(seeded, client, raw):
    response = await post_chat(client, raw)
    assert response.status_code in {400, 422}
    assert response.json()["request_id"]
    assert await counts() == (0, 0, 0)


async def test_non_json_content_type(seeded, client):
    response = await client.post("/api/chat/", data="message=hi", content_type="text/plain")
    assert response.status_code == 415
    assert await counts() == (0, 0, 0)


async def test_valid_reply_shape(seeded, client):
    response = await post_chat(client, {"message": "hello", "domain": "ml"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "response", "domain", "conversation_id", "message_id", "degraded", "request_id",
        "metadata",
    }
    assert body["domain"] == "ml"
    assert body["degraded"] is False
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert set(body["metadata"]) == {"duration_ms", "backend", "stages", "flags", "sources"}
    assert body["metadata"]["sources"] == []  # small talk quotes no knowledge
    assert body["metadata"]["stages"] == dict.fromkeys(
        ["inspect", "recall", "respond", "store", "followup"], "ok"
    )
    reply = await Message.objects.aget(pk=body["message_id"])
    assert reply.role == "assistant" and reply.content == body["response"]
    assert str(reply.conversation_id) == body["conversation_id"]
    assert json.loads(json.dumps(body))  # plain JSON
