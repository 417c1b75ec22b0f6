"""The websocket's handling of bad frames, size limits and consumer failures."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from grace.models import ErrorLog
from tests.chat.ws_helpers import send_json, ws
from tests.timing import limit

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _config(chat_config):
    """Anonymous chat on, throttles off, short stage timeouts (tests/chat/conftest.py)."""


async def _open():
    communicator = ws()
    connected, subprotocol = await communicator.connect()
    assert connected and subprotocol == "grace.v1"
    return communicator


async def _still_open(communicator) -> None:
    """The connection answers the next frame: it was not closed."""
    await send_json(communicator, {"type": "nonsense"})
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error" and frame["details"][0]["problem"] == "unknown"


async def test_not_json_gets_an_error_frame_and_the_socket_stays_open():
    communicator = await _open()
    await communicator.send_to(text_data="{not json")
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error"
    assert frame["error"] == "bad_request" and frame["status"] == 400
    assert frame["message"] == "The frame is not valid JSON."
    assert frame["details"][0]["problem"] == "json_invalid"
    assert frame["request_id"]
    await _still_open(communicator)
    await communicator.disconnect()


async def test_binary_frame_is_refused():
    communicator = await _open()
    await communicator.send_to(bytes_data=b"\x00\x01")
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error" and frame["status"] == 400
    assert "not binary" in frame["message"]
    await _still_open(communicator)
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"type": "shout", "message": "hi"}, "unknown"),
        ({"message": "hi"}, "missing"),
        ([1, 2, 3], "missing"),
        ("just a string", "missing"),
    ],
)
async def test_unknown_or_missing_type(payload, problem):
    communicator = await _open()
    await send_json(communicator, payload)
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error" and frame["status"] == 400
    detail = frame["details"][0]
    assert detail["field"] == "type" and detail["problem"] == problem
    assert detail["expected"] == ["message", "stop"]
    await _still_open(communicator)
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"message": ""}, "message", None),
        ({"message": "   \n\t "}, "message", None),
        ({"message": "x" * 4001}, "message", None),
        ({"message": 42}, "message", None),
        ({"message": "hi", "domain": "astrology"}, "domain", None),
        ({"message": "hi", "conversation_id": "not-a-uuid"}, "conversation_id", None),
        ({}, "message", "missing"),
    ],
)
async def test_invalid_fields_get_the_same_details_as_the_rest_api(fields, field, problem, client):
    communicator = await _open()
    await send_json(communicator, {"type": "message", **fields})
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error"
    assert frame["status"] == 422 and frame["error"] == "validation_error"
    fields_named = [detail["field"] for detail in frame["details"]]
    assert field in fields_named
    if problem:
        assert frame["details"][0]["problem"] == problem
    # The same input over REST gets the same details (apart from the request ID).
    response = await client.post(
        "/api/chat/", data=json.dumps(fields), content_type="application/json"
    )
    assert response.status_code == 422
    assert response.json()["details"] == frame["details"]
    await _still_open(communicator)
    await communicator.disconnect()


async def test_frame_over_the_size_limit_gets_an_error_frame(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "WS_MAX_FRAME_BYTES": 2048}
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "é" * 1500})  # 3000+ bytes
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error" and frame["status"] == 413
    assert frame["error"] == "payload_too_large"
    assert frame["details"] == [{"field": "frame", "problem": "too_large", "limit": 2048}]
    await _still_open(communicator)
    await communicator.disconnect()


async def test_frame_over_the_hard_limit_closes_with_1009(settings):
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "WS_MAX_FRAME_BYTES": 2048,
        "WS_CLOSE_FRAME_BYTES": 8192,
    }
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "x" * 9000})
    output = await communicator.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 1009}
    await communicator.disconnect()


async def test_stop_with_nothing_running_is_ignored():
    communicator = await _open()
    await send_json(communicator, {"type": "stop"})
    assert await communicator.receive_nothing(timeout=limit(0.3))
    # Positive control: the consumer answers the next frame, in order, so a frame the stop
    # had caused would have come first.
    await _still_open(communicator)
    await communicator.disconnect()


async def test_a_consumer_exception_sends_an_error_frame_and_logs_it(monkeypatch):
    import chat.consumers

    async def broken_reply(**kwargs):
        raise RuntimeError("injected consumer failure")

    monkeypatch.setattr(chat.consumers, "ws_reply", broken_reply)
    communicator = await _open()
    await send_json(communicator, {"type": "message", "message": "hello"})
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["type"] == "error" and frame["status"] == 500
    assert frame["error"] == "internal_error"
    assert "injected" not in frame["message"]  # no internals leak to the client
    rows = await sync_to_async(list)(ErrorLog.objects.filter(request_id=frame["request_id"]))
    assert len(rows) == 1
    assert rows[0].exception_class == "builtins.RuntimeError"
    assert rows[0].path == "/ws/chat/" and rows[0].method == "WEBSOCKET"
    await _still_open(communicator)
    await communicator.disconnect()
