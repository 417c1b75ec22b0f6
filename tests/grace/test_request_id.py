"""Request IDs: kept when safe, replaced when not, made when missing; on every log line."""

from __future__ import annotations

import json
import re

import pytest

from grace.request_id import request_id_accept, request_id_get
from tests.grace.support import asgi_call

pytestmark = pytest.mark.urls("tests.grace.urls")

GENERATED = re.compile(r"[0-9a-f]{32}")
UNSAFE = [
    "abc\ndef",
    "abc\r\nSet-Cookie: x=1",
    "x" * 65,
    "has space",
    "semi;colon",
    "<script>",
    "caf\u00e9",
    "",
]


@pytest.mark.parametrize("candidate", ["abc", "A-b_c.9", "x" * 64, "0"])
def test_safe_ids_are_kept(client, candidate):
    response = client.get("/api/test/rid", headers={"X-Request-ID": candidate})
    assert response["X-Request-ID"] == candidate
    assert response.json() == {"request_id": candidate}


@pytest.mark.parametrize("candidate", UNSAFE)
def test_unsafe_ids_are_replaced_never_echoed(client, candidate):
    response = client.get("/api/test/rid", headers={"X-Request-ID": candidate})
    rid = response["X-Request-ID"]
    assert GENERATED.fullmatch(rid)
    assert response.json() == {"request_id": rid}
    if candidate:
        assert candidate not in response.content.decode()
        assert all(candidate not in value for value in response.headers.values())


async def test_unsafe_raw_header_bytes_are_replaced():
    """A lenient server could pass a header with a newline through ASGI; it is replaced."""
    status, headers, body = await asgi_call(
        "GET", "/api/test/rid", headers=[(b"x-request-id", b"evil\nX-Injected: 1")]
    )
    assert status == 200
    assert GENERATED.fullmatch(headers["x-request-id"])
    assert "x-injected" not in headers
    assert json.loads(body) == {"request_id": headers["x-request-id"]}


def test_missing_id_is_generated_and_unique(client):
    ids = {client.get("/api/test/rid")["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5 and all(GENERATED.fullmatch(i) for i in ids)


def test_accept_function():
    assert request_id_accept("ok-1") == "ok-1"
    assert request_id_accept(None) != request_id_accept(None)
    assert request_id_accept("bad\n") != "bad\n"
    assert request_id_accept("bad\n").isalnum()


def test_contextvar_is_cleared_after_the_request(client):
    client.get("/api/test/rid", headers={"X-Request-ID": "gone-after"})
    assert request_id_get() is None


@pytest.mark.parametrize("path", ["/api/test/rid", "/api/test/arid"])
async def test_sync_and_async_views_under_asgi_see_the_id(async_client, path, json_log):
    """A sync view runs in a worker thread under ASGI: the contextvar must carry there."""
    response = await async_client.get(path, headers={"X-Request-ID": "carry-me"})
    assert response.status_code == 200
    assert response.json() == {"request_id": "carry-me"}
    assert response["X-Request-ID"] == "carry-me"
    view_lines = [r for r in json_log.records() if r["logger"] == "tests.grace.views"]
    assert len(view_lines) == 1 and view_lines[0]["request_id"] == "carry-me"


def test_every_log_line_of_a_request_is_json_with_its_id(client, json_log):
    """Every line the project handler writes while serving carries the request's ID,
    including Django's own 'Not Found' line written after the middleware returned."""
    client.get("/api/test/rid", headers={"X-Request-ID": "line-1"})
    client.get("/api/nothing", headers={"X-Request-ID": "line-2"})
    records = json_log.records()  # raises if any line is not JSON
    assert records, "nothing was logged"
    assert {r["request_id"] for r in records} == {"line-1", "line-2"}
    for record in records:
        assert {"time", "level", "logger", "message", "request_id"} <= set(record)
    access = [r for r in records if r["logger"] == "grace.access"]
    assert [(r["method"], r["path"], r["status"]) for r in access] == [
        ("GET", "/api/test/rid", 200),
        ("GET", "/api/nothing", 404),
    ]
    assert all(isinstance(r["duration_ms"], int | float) for r in access)
    not_found = [r for r in records if r["logger"] == "django.request"]
    assert not_found and not_found[0]["request_id"] == "line-2"


def test_log_line_outside_a_request_has_null_id(json_log):
    import logging

    logging.getLogger("grace.test").warning("no request here")
    (record,) = json_log.records()
    assert record["request_id"] is None and record["message"] == "no request here"


def test_access_log_can_be_switched_off(client, settings, json_log):
    from django.test import Client

    settings.GRACE = {**settings.GRACE, "ACCESS_LOG": False}
    Client().get("/api/test/rid")  # a new client loads the middleware with the setting
    assert not [r for r in json_log.records() if r["logger"] == "grace.access"]
