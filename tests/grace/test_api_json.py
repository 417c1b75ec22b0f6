"""Bad JSON of any shape is a 400 with the one error body, never a 500 or an ErrorLog row.

Each shape goes to the real endpoints that take a body: ``POST /api/chat/``, the SSE
``POST /api/chat/stream`` and the executor's ``POST /api/tasks/`` (whose free-form
``args``/``kwargs`` reach the database as JSON). Before the strict parser, NaN, Infinity,
1e999, a lone surrogate, a NUL and a body nested 900 deep were 500s with an ErrorLog row
on ``/api/tasks/`` (PostgreSQL and SQLite alike); a duplicate key silently won; a huge
number was "not valid JSON".
"""

from __future__ import annotations

import json

import pytest

from chat.models import Message
from executor.models import TaskRecord
from grace.json_body import InvalidJson, json_body_parse
from grace.models import ErrorLog
from tests.grace.support import asgi_call, assert_error

JSON = "application/json"
TASK = "chat.tasks.causal_track"
ENDPOINTS = ["/api/chat/", "/api/chat/stream", "/api/tasks/"]


def task_body(value: bytes) -> bytes:
    return b'{"task": "' + TASK.encode() + b'", "kwargs": {"event_type": ' + value + b"}}"


# name: (body, problem, a piece of the message)
SHAPES: dict[str, tuple[bytes, str, str]] = {
    "20000 nested arrays": (
        b"[" * 20000 + b"]" * 20000,
        "too_deep",
        "nested more than 32 levels deep",
    ),
    "900 nested arrays in a field": (
        task_body(b"[" * 900 + b"]" * 900),
        "too_deep",
        "nested more than 32 levels deep",
    ),
    "nested objects in a string-free scan": (
        b'{"a":' * 40 + b"1" + b"}" * 40,
        "too_deep",
        "nested more than 32 levels deep",
    ),
    "5000-digit integer": (
        b'{"message": "hi", "n": 1' + b"0" * 5000 + b"}",
        "number_too_long",
        "a number of 5001 characters; the limit is 100",
    ),
    "1e999": (task_body(b"1e999"), "number_out_of_range", "too large for a 64-bit float"),
    "NaN": (task_body(b"NaN"), "not_a_number", "contains NaN"),
    "-Infinity": (task_body(b"-Infinity"), "not_a_number", "contains -Infinity"),
    "duplicate key": (
        b'{"message": "hi", "message": "ho"}',
        "duplicate_key",
        'the key "message" twice',
    ),
    "array at the top": (b"[1, 2]", "not_an_object", "must be a JSON object, not an array"),
    "string at the top": (b'"hi"', "not_an_object", "must be a JSON object, not a string"),
    "null at the top": (b"null", "not_an_object", "must be a JSON object, not null"),
    "invalid UTF-8": (b'{"message": "\xff\xfe"}', "encoding", "not valid UTF-8 (byte 13)"),
    "UTF-16": ('{"message": "hi"}'.encode("utf-16"), "encoding", "not valid UTF-8 (byte 0)"),
    "escaped lone surrogate": (task_body(b'"\\udc00"'), "lone_surrogate", "lone surrogate"),
    "raw surrogate bytes": (b'{"message": "\xed\xa0\x80"}', "encoding", "not valid UTF-8"),
    "NUL in a string": (task_body(b'"a\\u0000b"'), "nul_character", "NUL character"),
    "NUL in a key": (b'{"message": "hi", "a\\u0000": 1}', "nul_character", "NUL character"),
    "syntax": (b'{"message": ', "syntax", "not valid JSON: Expecting value (line 1, column 13)"),
}


@pytest.fixture
def staff(admin_client, settings):
    settings.EXECUTOR = {**settings.EXECUTOR, "API_TASKS": [TASK]}
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "THROTTLE_USER": "off", "THROTTLE_ANON": "off"}
    return admin_client


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_bad_shape_is_a_400_on_every_endpoint(staff, path, shape):
    raw, problem, words = SHAPES[shape]
    response = staff.post(path, data=raw, content_type=JSON)
    body = assert_error(response, 400, "bad_request")
    assert words in body["message"], body
    assert body["details"][0]["field"] == "body"
    assert body["details"][0]["problem"] == problem
    assert not ErrorLog.objects.exists()
    assert not TaskRecord.objects.exists() and not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_good_bodies_still_pass(staff):
    """Big but sane values, a UTF-8 BOM, escaped surrogate pairs: accepted."""
    ok = task_body(b'[{"a": [1, 2.5, -3e10, 12345678901234567890]}, "\\ud83d\\ude00"]')
    assert staff.post("/api/tasks/", data=ok, content_type=JSON).status_code == 202
    stored = TaskRecord.objects.get().kwargs["event_type"]
    assert stored == [{"a": [1, 2.5, -3e10, 12345678901234567890]}, "\U0001f600"]
    deepest = task_body(b"[" * 30 + b"]" * 30)  # 32 levels with the two objects around
    assert staff.post("/api/tasks/", data=deepest, content_type=JSON).status_code == 202
    bom = b'\xef\xbb\xbf{"message": "hi"}'
    assert staff.post("/api/chat/", data=bom, content_type=JSON).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_depth_limit_is_a_setting(staff, settings):
    settings.GRACE = {**settings.GRACE, "JSON_MAX_DEPTH": 4}
    body = assert_error(
        staff.post("/api/tasks/", data=task_body(b"[[[1]]]"), content_type=JSON), 400
    )
    assert body["message"].startswith("The request body is nested more than 4 levels deep")
    assert staff.post("/api/tasks/", data=task_body(b"[[1]]"), content_type=JSON).status_code == 202


@pytest.mark.urls("tests.grace.urls")
@pytest.mark.django_db(transaction=True)
async def test_deep_body_through_the_asgi_handler_is_a_400():
    """Under ASGI (as daphne serves it), on another NinjaAPI given the project's handlers
    (``api_errors_install``): the same 400 and body."""
    raw = b'{"name": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    status, headers, content = await asgi_call(
        "POST",
        "/api/test/echo",
        headers=[
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
        chunks=[raw],
    )
    body = json.loads(content)
    assert status == 400 and body["error"] == "bad_request"
    assert body["details"][0]["problem"] == "too_deep"
    assert body["request_id"] == headers["x-request-id"]
    assert not await ErrorLog.objects.aexists()


def test_brackets_inside_strings_do_not_count():
    raw = b'{"message": "' + b"[" * 5000 + b'", "x": "\\"[[[["}'
    assert json_body_parse(raw=raw, max_depth=2)["message"] == "[" * 5000


def test_depth_is_found_without_the_recursive_parser():
    """A million brackets: the scan refuses them; json.loads never sees them."""
    with pytest.raises(InvalidJson) as caught:
        json_body_parse(raw=b"[" * 1_000_000, max_depth=32)
    assert caught.value.details[0] == {
        "field": "body",
        "problem": "too_deep",
        "limit": 32,
        "position": 32,
    }
