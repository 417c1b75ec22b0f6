"""Chat over ``/ws/chat/``: every server frame, stop, disconnect, busy, faults, logs."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache

from chat.models import Message
from grace.logging import RequestIDFilter
from tests.chat.ws_helpers import receive_until, send_json, ws
from tests.e2e.slow_backend import WORDS
from tests.timing import limit, wait_until_async

pytestmark = [pytest.mark.django_db(transaction=True)]

SLOW = {"BACKEND": "tests.e2e.slow_backend.SlowBackend", "OPTIONS": {"DELAY": 0.05}}
REST_KEYS = {
    "response",
    "domain",
    "conversation_id",
    "message_id",
    "degraded",
    "request_id",
    "metadata",
}


@pytest.fixture(autouse=True)
def _config(chat_config):
    """Anonymous chat on, throttles off, short stage timeouts (tests/chat/conftest.py)."""


@pytest.fixture
def slow_model(settings):
    """The slow deterministic writer as the model: 57 words, 50 ms apart."""
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "REPLY_BACKENDS": {**settings.GRACE_CHAT["REPLY_BACKENDS"], "slow": SLOW},
        "REPLY_BACKEND": "slow",
        "PIPELINE_DEADLINE": 10.0,
        "STAGE_TIMEOUTS": {**settings.GRACE_CHAT["STAGE_TIMEOUTS"], "respond": 8.0},
    }


@pytest.fixture
def records():
    """Log records of the consumer and the respond stage, with the request ID filter applied."""
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    handler = Keep(level=logging.DEBUG)
    handler.addFilter(RequestIDFilter())
    loggers = [logging.getLogger(name) for name in ("chat.consumers", "chat.respond")]
    for logger in loggers:
        logger.addHandler(handler)
    yield captured
    for logger in loggers:
        logger.removeHandler(handler)


async def _open():
    communicator = ws()
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _messages(request_id: str) -> list[Message]:
    return await sync_to_async(list)(Message.objects.filter(request_id=request_id))


async def test_a_message_streams_start_tokens_and_done(client, records):
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "Hello Grace"})
    done, before = await receive_until(communicator, "done")

    start, tokens = before[0], before[1:]
    assert start["type"] == "start" and start["conversation_id"] is None
    assert tokens and all(frame["type"] == "token" for frame in tokens)
    request_id = start["request_id"]
    assert {frame["request_id"] for frame in [*before, done]} == {request_id}
    assert "".join(frame["text"] for frame in tokens) == done["response"]

    assert set(done) == REST_KEYS | {"type"}
    assert done["degraded"] is False and done["domain"] == "all"
    assert done["metadata"]["backend"] == "fallback"
    assert set(done["metadata"]["stages"]) == {"inspect", "recall", "respond", "store", "followup"}
    # The same shape as the REST 200 for the same message.
    rest = (await client.post("/api/chat/", {"message": "Hello Grace"}, "application/json")).json()
    assert set(rest) == set(done) - {"type"}
    assert set(rest["metadata"]) == set(done["metadata"])

    stored = await _messages(request_id)
    assert sorted(m.role for m in stored) == ["assistant", "user"]
    reply = next(m for m in stored if m.role == "assistant")
    assert str(reply.id) == done["message_id"] and reply.content == done["response"]
    assert str(reply.conversation_id) == done["conversation_id"]
    # The reply's log lines carry its request ID.
    finished = [r for r in records if "websocket reply done" in r.getMessage()]
    assert [r.request_id for r in finished] == [request_id]
    await communicator.disconnect()


async def test_each_message_has_its_own_request_id_and_continues_the_conversation():
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "My name is Ada"})
    first, _ = await receive_until(communicator, "done")
    await send_json(
        communicator,
        {
            "type": "message",
            "message": "What did I say?",
            "domain": "core",
            "conversation_id": first["conversation_id"],
        },
    )
    second, before = await receive_until(communicator, "done")
    assert before[0]["conversation_id"] == first["conversation_id"]
    assert second["conversation_id"] == first["conversation_id"]
    assert second["domain"] == "core"
    assert second["request_id"] != first["request_id"]
    assert "Ada" in second["response"]
    await communicator.disconnect()


async def test_someone_elses_conversation_is_a_validation_error_like_rest(client):
    communicator = await _open()
    unknown = str(uuid.uuid4())
    await send_json(communicator, {"type": "message", "message": "hi", "conversation_id": unknown})
    error, before = await receive_until(communicator, "error")
    assert [frame["type"] for frame in before] == ["start"]
    assert error["status"] == 422 and error["error"] == "validation_error"
    assert error["request_id"] == before[0]["request_id"]
    rest = await client.post(
        "/api/chat/", {"message": "hi", "conversation_id": unknown}, "application/json"
    )
    assert rest.status_code == 422
    assert rest.json()["details"] == error["details"]
    await communicator.disconnect()


async def test_an_injected_fault_gives_done_with_degraded(settings, records):
    settings.GRACE = {**settings.GRACE, "FAULTS": "respond=error"}
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "Hello there"})
    done, _ = await receive_until(communicator, "done")
    assert done["degraded"] is True
    assert done["metadata"]["stages"]["respond"] == "error"
    assert "response_fallback" in done["metadata"]["flags"]
    assert done["response"]  # the fallback still answered
    failed = [
        r for r in records if r.name == "chat.respond" and "respond failed" in r.getMessage()
    ]
    assert failed and {r.request_id for r in failed} == {done["request_id"]}
    await communicator.disconnect()


async def test_stop_ends_generation_at_once_and_stores_the_partial_reply(slow_model):
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "Tell me everything"})
    first_token, _ = await receive_until(communicator, "token")
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await send_json(communicator, {"type": "stop"})
    done, tokens = await receive_until(communicator, "done", timeout=5)
    assert loop.time() - stopped_at < limit(1.5)  # the whole reply would take about 3 s

    texts = [first_token["text"]] + [frame["text"] for frame in tokens if frame["type"] == "token"]
    assert 1 <= len(texts) < len(WORDS)
    assert done["response"] == "".join(texts)
    assert "stopped" in done["metadata"]["flags"]
    assert done["degraded"] is False  # a stop is the user's choice, not a failure

    stored = await _messages(done["request_id"])
    reply = next(m for m in stored if m.role == "assistant")
    assert reply.content == done["response"]
    assert "stopped" in reply.metadata.get("flags", [])
    # The connection is ready for the next message.
    await send_json(communicator, {"type": "message", "message": "Short one?"})
    await receive_until(communicator, "start")
    await send_json(communicator, {"type": "stop"})
    await receive_until(communicator, "done", timeout=5)
    await communicator.disconnect()


async def test_a_message_while_busy_gets_a_busy_error(slow_model):
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "First question"})
    start, _ = await receive_until(communicator, "start")
    await send_json(communicator, {"type": "message", "message": "Second question"})
    busy, tokens = await receive_until(communicator, "error")
    assert all(frame["type"] == "token" for frame in tokens)
    assert busy["error"] == "busy" and busy["status"] == 409
    assert busy["details"] == [{"active_request_id": start["request_id"]}]
    assert busy["request_id"] != start["request_id"]
    # The first reply goes on, undisturbed.
    await send_json(communicator, {"type": "stop"})
    done, _ = await receive_until(communicator, "done", timeout=5)
    assert done["request_id"] == start["request_id"]
    await communicator.disconnect()


async def test_a_disconnect_cancels_generation_and_stores_the_partial_reply(slow_model):
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "Tell me a story"})
    start, _ = await receive_until(communicator, "start")
    await receive_until(communicator, "token")
    await communicator.disconnect()

    async def stored_reply() -> Message | None:
        stored = await _messages(start["request_id"])
        return next((m for m in stored if m.role == "assistant"), None)

    reply = await wait_until_async(stored_reply, timeout=5, message="the partial reply stored")
    assert "stopped" in reply.metadata.get("flags", [])
    assert 0 < len(reply.content) < len(" ".join(WORDS))


async def test_throttled_messages_get_a_429_error_frame(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "THROTTLE_ANON": "2/min"}
    await sync_to_async(cache.clear)()
    communicator = await _open()
    for _ in range(2):
        await send_json(communicator, {"type": "message", "message": "hello"})
        await receive_until(communicator, "done")
    await send_json(communicator, {"type": "message", "message": "hello"})
    error = await communicator.receive_json_from()
    assert error["type"] == "error" and error["status"] == 429
    assert error["error"] == "rate_limited"
    assert error["details"][0]["retry_after"] >= 1
    await communicator.disconnect()


async def test_a_messages_throttle_count_is_awaited(settings, monkeypatch):
    """The socket awaits its count (the synchronous one would block the event loop)."""
    import chat.throttling

    def blocking(*args, **kwargs):
        raise AssertionError("the consumer blocked the event loop on a throttle count")

    monkeypatch.setattr(chat.throttling, "throttle_count", blocking)
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "THROTTLE_ANON": "1/min"}
    await sync_to_async(cache.clear)()
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "hello"})
    await receive_until(communicator, "done")
    await send_json(communicator, {"type": "message", "message": "hello"})
    error = await communicator.receive_json_from()
    assert error["type"] == "error" and error["status"] == 429
    await communicator.disconnect()
