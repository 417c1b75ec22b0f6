"""Every error under /api/ has one JSON body, with the request ID of the header."""

from __future__ import annotations

import json

import pytest
from django.db import connections

from grace.models import ErrorLog
from tests.grace.support import asgi_call, assert_error, wait_for
from tests.timing import wait_until_async

pytestmark = pytest.mark.urls("tests.grace.urls")

JSON = "application/json"


def test_malformed_json_is_400(client):
    response = client.post("/api/test/echo", data="{not json", content_type=JSON)
    body = assert_error(response, 400, "bad_request")
    assert body["message"] == (
        "The request body is not valid JSON: Expecting property name enclosed in double "
        "quotes (line 1, column 2)."
    )
    assert body["details"] == [{"field": "body", "problem": "syntax", "line": 1, "column": 2}]


def test_malformed_json_under_debug_does_not_quote_the_parser(client, settings):
    settings.DEBUG = True
    response = client.post("/api/test/echo", data='{"name": ', content_type=JSON)
    body = assert_error(response, 400, "bad_request")
    assert body["message"] == (
        "The request body is not valid JSON: Expecting value (line 1, column 10)."
    )


def test_bad_content_length_is_400(client):
    response = client.generic(
        "POST", "/api/test/echo", b"{}", content_type=JSON, CONTENT_LENGTH="12x"
    )
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize("debug", [False, True])
def test_unknown_path_is_404(client, settings, debug):
    settings.DEBUG = debug  # DEBUG's technical 404 page would list the URL patterns
    response = client.get("/api/no/such/thing")
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("debug", [False, True])
def test_missing_trailing_slash_is_404_not_a_redirect(client, settings, debug):
    settings.DEBUG = debug  # Django would raise RuntimeError for the POST under DEBUG
    assert client.get("/api/test/slashed/").status_code == 200
    assert_error(client.get("/api/test/slashed"), 404, "not_found")
    assert_error(client.post("/api/test/slashed", {}, content_type=JSON), 404, "not_found")


def test_pages_keep_the_slash_redirect(client):
    response = client.get("/accounts/login")
    assert response.status_code == 301 and response["Location"] == "/accounts/login/"


def test_wrong_method_is_405_with_allow(client):
    response = client.delete("/api/health")
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET"


def test_unauthenticated_is_401(client):
    response = client.get("/api/test/private")
    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_permission_denied_is_403(client):
    assert_error(client.get("/api/test/forbidden"), 403, "forbidden")


def test_api_error_keeps_its_status_details_and_headers(client):
    response = client.get("/api/test/conflict")
    body = assert_error(response, 409, "conflict")
    assert body["message"] == "Already there."
    assert body["details"] == [{"field": "name"}]
    assert response["Retry-After"] == "3"


def test_foreign_json_error_body_is_rewritten_keeping_its_message(client):
    response = client.get("/api/plain/detail")
    body = assert_error(response, 410, "gone")
    assert body["message"] == "This thing is gone."


def test_body_over_limit_is_413(client, settings):
    settings.GRACE = {**settings.GRACE, "MAX_BODY_BYTES": 2048}
    payload = json.dumps({"name": "x", "count": 1, "pad": "p" * 5000})
    response = client.post("/api/test/echo", data=payload, content_type=JSON)
    body = assert_error(response, 413, "payload_too_large")
    assert body["details"] == [{"field": "body", "problem": "too_large", "limit": 2048}]


async def test_chunked_body_over_limit_is_413(settings):
    """No Content-Length (Transfer-Encoding: chunked): measured after the server buffered it."""
    settings.GRACE = {**settings.GRACE, "MAX_BODY_BYTES": 2048}
    status, headers, body = await asgi_call(
        "POST",
        "/api/test/echo",
        headers=[(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        chunks=[b'{"name": "' + b"x" * 1000, b"y" * 3000, b'", "count": 1}'],
    )
    assert status == 413
    data = json.loads(body)
    assert data["error"] == "payload_too_large"
    assert data["request_id"] == headers["x-request-id"]


async def test_chunked_body_under_limit_is_served(settings):
    status, headers, body = await asgi_call(
        "POST",
        "/api/test/echo",
        headers=[(b"content-type", b"application/json")],
        chunks=[b'{"name": "ab', b'c", "count": 2}'],
    )
    assert status == 200, body
    assert json.loads(body)["name"] == "abc"


@pytest.mark.parametrize("path", ["/api/test/echo", "/api/plain/body"])
async def test_understated_content_length_is_413_not_400(settings, path):
    """Django raises RequestDataTooBig when it reads the body; that is a 413, not its 400."""
    settings.GRACE = {**settings.GRACE, "MAX_BODY_BYTES": 2048}
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    status, headers, body = await asgi_call(
        "POST",
        path,
        headers=[(b"content-type", b"application/json"), (b"content-length", b"10")],
        chunks=[b'{"name": "' + b"x" * 5000 + b'", "count": 1}'],
    )
    assert status == 413, body
    data = json.loads(body)
    assert data["error"] == "payload_too_large"
    assert data["request_id"] == headers["x-request-id"]


def test_wrong_content_type_is_415(client):
    response = client.post("/api/test/echo", data="name=x&count=1", content_type="text/plain")
    body = assert_error(response, 415, "unsupported_media_type")
    assert "text/plain" in body["message"]


def test_form_post_is_415(client):
    response = client.post("/api/test/echo", data={"name": "x", "count": "1"})
    assert_error(response, 415, "unsupported_media_type")


def test_validation_is_422_with_field_problem_and_limit(client):
    payload = {"name": "", "count": 11}
    response = client.post("/api/test/echo", data=payload, content_type=JSON)
    body = assert_error(response, 422, "validation_error")
    by_field = {d["field"]: d for d in body["details"]}
    assert by_field["name"]["problem"] == "string_too_short"
    assert by_field["name"]["limit"] == 1
    assert by_field["count"]["problem"] == "less_than_equal"
    assert by_field["count"]["limit"] == 10


def test_validation_does_not_echo_huge_input(client):
    huge = "A" * 60000
    response = client.post("/api/test/echo", data={"name": huge, "count": 1}, content_type=JSON)
    body = assert_error(response, 422, "validation_error")
    assert body["details"][0]["field"] == "name"
    assert body["details"][0]["limit"] == 20
    assert "AAAAAAAAAA" not in response.content.decode()
    assert len(response.content) < 2000


def test_missing_field_is_422(client):
    response = client.post("/api/test/echo", data={"name": "x"}, content_type=JSON)
    body = assert_error(response, 422, "validation_error")
    assert body["details"][0]["field"] == "count"
    assert body["details"][0]["problem"] == "missing"


def test_throttled_is_429_with_retry_after(client):
    statuses = [client.get("/api/test/limited").status_code for _ in range(2)]
    assert statuses == [200, 200]
    response = client.get("/api/test/limited")
    body = assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert response["Retry-After"] in body["message"]


@pytest.mark.django_db(transaction=True, databases=["default", "metrics"])
def test_unhealthy_database_is_503_naming_the_check(client, monkeypatch):
    # Each health check opens a new connection from these settings in its own thread.
    monkeypatch.setitem(
        connections.settings["metrics"], "NAME", "/nonexistent-grace-dir/metrics.sqlite3"
    )
    response = client.get("/api/health")
    body = assert_error(response, 503, "unhealthy")
    assert "database:metrics" in body["message"]
    assert [d["check"] for d in body["details"]] == ["database:metrics"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("debug", [False, True])
def test_500_hides_the_exception_and_logs_a_row(client, settings, debug):
    settings.DEBUG = debug
    response = client.get("/api/test/boom", headers={"X-Request-ID": f"boom-{debug}"})
    body = assert_error(response, 500, "internal_error")
    assert body["request_id"] == f"boom-{debug}"
    row = ErrorLog.objects.get(request_id=f"boom-{debug}")
    assert row.status == 500 and row.method == "GET" and row.path == "/api/test/boom"
    assert row.exception_class == "builtins.RuntimeError"
    assert "secret-detail-xyz" in row.message
    assert "Traceback" in row.traceback and "def boom" not in row.traceback
    assert "in boom" in row.traceback


@pytest.mark.django_db(transaction=True)
async def test_500_in_async_view(async_client, settings):
    settings.DEBUG = True
    response = await async_client.get("/api/test/aboom")
    body = assert_error(response, 500, "internal_error")
    # From the event loop the error log never blocks the loop: the row comes just after.
    rows = await wait_for_row(body["request_id"])
    assert rows and "in aboom" in rows[0].traceback


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/api/plain/boom", "/api/plain/aboom"])
@pytest.mark.parametrize("debug", [False, True])
def test_500_from_a_plain_django_view_under_api(client, settings, path, debug):
    settings.DEBUG = debug
    client.raise_request_exception = False
    response = client.get(path)
    body = assert_error(response, 500, "internal_error")
    row = wait_for(lambda: ErrorLog.objects.filter(request_id=body["request_id"]).first())
    assert row is not None and row.path == path
    assert "secret-detail-xyz" in row.message
    assert ErrorLog.objects.filter(request_id=body["request_id"]).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/pages/boom", "/pages/aboom"])
def test_500_outside_api_keeps_the_django_page(client, path):
    client.raise_request_exception = False
    response = client.get(path)
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert b"Server Error (500)" in response.content
    rid = response["X-Request-ID"]
    row = wait_for(lambda: ErrorLog.objects.filter(request_id=rid).first())
    assert row is not None and row.path == path


def test_admin_and_pages_keep_their_html_with_the_header(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert len(response["X-Request-ID"]) == 32
    missing = client.get("/no-such-page/")
    assert missing.status_code == 404
    assert missing["Content-Type"].startswith("text/html")
    assert missing["X-Request-ID"]


async def wait_for_row(request_id: str) -> list[ErrorLog]:
    async def rows() -> list[ErrorLog]:
        return [row async for row in ErrorLog.objects.filter(request_id=request_id)]

    return await wait_until_async(rows, timeout=5, interval=0.05,
                                  message=f"an error log row for {request_id}")
    return []
