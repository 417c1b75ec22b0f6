"""The websocket's handling of bad frames, size limits and consumer failures."""

from __future__ import annotations

import json
import logging

import pytest
from asgiref.sync import sync_to_async

from grace.models import ErrorLog
from tests.chat.ws_helpers import receive_until, send_json, ws
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
    assert frame["message"] == (
        "The frame is not valid JSON: Expecting property name enclosed in double quotes "
        "(line 1, column 2)."
    )
    assert frame["details"][0]["problem"] == "syntax"
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
    ],
)
async def test_unknown_or_missing_type(payload, problem):
    communicator = await _open()
    await send_json(communicator, payload)
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error" and frame["status"] == 400
    detail = frame["details"][0]
    assert detail["field"] == "type" and detail["problem"] == problem
    assert detail["expected"] == ["message", "stop", "regenerate"]
    await _still_open(communicator)
    await communicator.disconnect()


# Every JSON shape a client can send (finding 4 of issue 14: 20,000 nested brackets were a
# RecursionError, a 500 frame, a traceback and an ErrorLog row each).
HOSTILE = [
    (
        "[" * 20000 + "]" * 20000,
        "too_deep",
        "The frame is nested more than 32 levels deep (at byte 32).",
    ),
    (
        '{"type": "message", "x": ' + "[" * 33 + "]" * 33 + "}",
        "too_deep",
        "The frame is nested more than 32 levels deep (at byte 56).",
    ),
    (
        '{"a": ' * 5000 + "1" + "}" * 5000,
        "too_deep",
        "The frame is nested more than 32 levels deep (at byte 192).",
    ),
    (
        '{"type": "message", "n": ' + "9" * 5000 + "}",
        "number_too_long",
        "The frame has a number of 5000 characters; the limit is 100.",
    ),
    (
        '{"type": "message", "n": 1e999}',
        "number_out_of_range",
        "The frame has a number too large for a 64-bit float (1e999).",
    ),
    (
        '{"type": "message", "n": NaN}',
        "not_a_number",
        "The frame contains NaN, which is not a JSON number.",
    ),
    (
        '{"type": "message", "n": -Infinity}',
        "not_a_number",
        "The frame contains -Infinity, which is not a JSON number.",
    ),
    (
        '{"type": "message", "message": "hi \\ud800 there"}',
        "lone_surrogate",
        "The frame has a string with a lone surrogate (\\ud800): not Unicode text.",
    ),
    (
        '{"type": "message", "message": "a\\u0000b"}',
        "nul_character",
        "The frame has a string with a NUL character (\\u0000).",
    ),
    (
        '{"type": "message", "type": "stop"}',
        "duplicate_key",
        'The frame has the key "type" twice in one object.',
    ),
    ("[1, 2, 3]", "not_an_object", "The frame must be a JSON object, not an array."),
    ('"just a string"', "not_an_object", "The frame must be a JSON object, not a string."),
    ("null", "not_an_object", "The frame must be a JSON object, not null."),
    ("12", "not_an_object", "The frame must be a JSON object, not a number."),
    ("   ", "syntax", "The frame is not valid JSON: Expecting value (line 1, column 4)."),
    (
        '{"type": "message", "message": "unterminated [[[[[[',
        "syntax",
        "The frame is not valid JSON: Unterminated string starting at (line 1, column 32).",
    ),
]


@pytest.mark.parametrize(("text", "problem", "message"), HOSTILE)
async def test_any_json_shape_is_a_400_frame_never_a_500(text, problem, message, caplog):
    communicator = await _open()
    with caplog.at_level(logging.WARNING):
        await communicator.send_to(text_data=text)
        frame = await communicator.receive_json_from()
        assert frame["type"] == "error" and frame["status"] == 400, frame
        assert frame["error"] == "bad_request" and frame["message"] == message
        assert frame["details"][0]["field"] == "frame"
        assert frame["details"][0]["problem"] == problem
        await _still_open(communicator)
    await communicator.disconnect()
    # A client's mistake is not the server's error: no row, no traceback.
    assert await ErrorLog.objects.acount() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_surrogate_pair_is_text_and_allowed():
    communicator = await _open()
    await communicator.send_to(text_data='{"type": "message", "message": "smile \\ud83d\\ude00"}')
    done, _ = await receive_until(communicator, "done")
    assert done["request_id"]
    await communicator.disconnect()


async def test_300_deep_frames_write_no_error_rows_and_close_the_socket_with_1008(settings):
    """The budget of invalid frames: 20 in 10 s by default, then a last error frame and
    close 1008 (policy violation)."""
    settings.GRACE = {**settings.GRACE, "WS_BAD_FRAMES": 5, "WS_BAD_FRAMES_SECONDS": 60.0}
    communicator = await _open()
    deep = "[" * 20000 + "]" * 20000
    for _ in range(300):
        await communicator.send_to(text_data=deep)
    for _ in range(5):
        frame = await communicator.receive_json_from()
        assert frame["status"] == 400 and frame["details"][0]["problem"] == "too_deep"
    last = await communicator.receive_json_from()
    assert last["type"] == "error" and last["status"] == 429
    assert last["error"] == "too_many_bad_frames"
    assert last["message"] == "More than 5 invalid frames in 60 seconds; closing the connection."
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 1008}
    # Nothing more: the remaining frames of the burst are not answered.
    assert await communicator.receive_nothing(timeout=limit(0.3))
    assert await ErrorLog.objects.acount() == 0
    await communicator.disconnect()  # the consumer ends on a live loop


async def test_bad_frames_below_the_budget_leave_the_socket_open(settings):
    settings.GRACE = {**settings.GRACE, "WS_BAD_FRAMES": 5, "WS_BAD_FRAMES_SECONDS": 60.0}
    communicator = await _open()
    for _ in range(4):
        await communicator.send_to(text_data="{not json")
        assert (await communicator.receive_json_from())["status"] == 400
    # The 5th bad frame is still answered (this one is the positive control of the open socket).
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
