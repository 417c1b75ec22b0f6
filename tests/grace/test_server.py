"""The `make run` path: a real daphne process on fresh SQLite files, spoken to over TCP."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.grace.support import chunked, raw_http, wait_for
from tests.servers import GraceServer, manage
from tests.timing import limit

pytestmark = pytest.mark.slow

TEST_SETTINGS = {"DJANGO_SETTINGS_MODULE": "tests.grace.server_settings"}
# daphne's own access log (stdout, plain text) is the only output that is not ours.
DAPHNE_ACCESS = re.compile(r'^\S+:\d+ - - \[[^\]]+\] "')


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[GraceServer]:
    tmp = tmp_path_factory.mktemp("grace-server")
    env = {**TEST_SETTINGS, "GRACE_DEBUG": "true", "GRACE_MAX_BODY_BYTES": "4096"}
    with GraceServer(tmp, env) as running:
        yield running


def get(server: GraceServer, path: str, **kwargs) -> httpx.Response:
    return httpx.get(server.url + path, timeout=10, **kwargs)


def error_body(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message", "details", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text and "secret-detail" not in response.text
    return body


def errorlog_rows(server: GraceServer, request_id: str) -> list[tuple]:
    with sqlite3.connect(server.tmp / "db.sqlite3") as conn:
        return conn.execute(
            "SELECT path, status, exception_class, traceback FROM grace_errorlog "
            "WHERE request_id = ?",
            (request_id,),
        ).fetchall()


def server_log_records(server: GraceServer) -> list[dict]:
    records = []
    for line in server.log().splitlines():
        if not line.strip() or DAPHNE_ACCESS.match(line):
            continue
        records.append(json.loads(line))  # every other line is one JSON object
    return records


def test_health_and_admin_login_page(server):
    health = get(server, "/api/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert set(health.json()["checks"]) >= {"database:default", "database:metrics"}
    assert re.fullmatch(r"[0-9a-f]{32}", health.headers["x-request-id"])
    login = get(server, "/admin/login/")
    assert login.status_code == 200
    assert login.headers["content-type"].startswith("text/html")
    assert "Log in" in login.text
    assert login.headers["x-request-id"]


def test_request_ids_over_a_raw_socket(server):
    def request_with(header_line: bytes) -> tuple[int, dict, bytes]:
        return raw_http(
            server.port,
            b"GET /api/test/rid HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + header_line
            + b"Connection: close\r\n\r\n",
        )

    status, headers, body = request_with(b"X-Request-ID: kept-1.2_3\r\n")
    assert status == 200 and headers["x-request-id"] == "kept-1.2_3"
    assert json.loads(body) == {"request_id": "kept-1.2_3"}
    for bad in (b"x" * 65, b"two words", b"<b>", b"a\r\n folded"):
        status, headers, body = request_with(b"X-Request-ID: " + bad + b"\r\n")
        assert status == 200
        assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), (bad, headers)
        assert json.loads(body) == {"request_id": headers["x-request-id"]}
    status, headers, _ = request_with(b"")
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])


def test_sync_view_in_the_server_thread_sees_the_id(server):
    for path in ("/api/test/rid", "/api/test/arid"):
        response = get(server, path, headers={"X-Request-ID": f"srv{path.replace('/', '-')}"})
        assert response.json() == {"request_id": response.headers["x-request-id"]}


def test_statuses_through_the_server(server):
    bad_json = httpx.post(
        server.url + "/api/test/echo",
        content=b"{oops",
        headers={"content-type": "application/json"},
    )
    assert error_body(bad_json, 400)["error"] == "bad_request"
    assert error_body(get(server, "/api/missing"), 404)["error"] == "not_found"
    wrong = httpx.put(server.url + "/api/health")
    assert error_body(wrong, 405)["error"] == "method_not_allowed"
    big = httpx.post(
        server.url + "/api/test/echo",
        content=b'{"name": "' + b"x" * 5000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert error_body(big, 413)["details"][0]["limit"] == 4096
    form = httpx.post(server.url + "/api/test/echo", data={"name": "x"})
    assert error_body(form, 415)["error"] == "unsupported_media_type"
    invalid = httpx.post(server.url + "/api/test/echo", json={"name": "y" * 3000, "count": 1})
    assert error_body(invalid, 422)["details"][0]["field"] == "name"
    assert "yyyyyyyyyy" not in invalid.text


def test_chunked_body_over_the_limit_is_413(server):
    body = b'{"name": "' + b"z" * 20000 + b'", "count": 1}'
    status, headers, data = raw_http(
        server.port,
        b"POST /api/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunked(body),
    )
    assert status == 413, data[:300]
    payload = json.loads(data)
    assert payload["error"] == "payload_too_large"
    assert payload["request_id"] == headers["x-request-id"]
    small = b'{"name": "ok", "count": 3}'
    status, _, data = raw_http(
        server.port,
        b"POST /api/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunked(small, size=5),
    )
    assert status == 200 and json.loads(data)["count"] == 3


@pytest.mark.parametrize("path", ["/api/test/boom", "/api/test/aboom", "/api/plain/boom"])
def test_500_under_debug_is_json_with_an_errorlog_row(server, path):
    rid = "srv500" + path.replace("/", "-")
    response = get(server, path, headers={"X-Request-ID": rid})
    body = error_body(response, 500)
    assert body["error"] == "internal_error" and body["request_id"] == rid
    rows = wait_for(lambda: errorlog_rows(server, rid))
    assert rows and rows[0][0] == path and rows[0][1] == 500
    assert rows[0][2] == "builtins.RuntimeError" and "secret-detail-xyz" in rows[0][3]


def test_500_outside_api_keeps_the_html_page_with_the_header(server):
    response = get(server, "/pages/boom", headers={"X-Request-ID": "srv-page-500"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-request-id"] == "srv-page-500"
    assert wait_for(lambda: errorlog_rows(server, "srv-page-500"))


def test_server_log_lines_are_json_with_the_request_id(server):
    get(server, "/api/test/rid", headers={"X-Request-ID": "srv-log-1"})
    get(server, "/api/test/boom", headers={"X-Request-ID": "srv-log-2"})

    def lines_for(rid: str) -> list[dict]:
        return [r for r in server_log_records(server) if r.get("request_id") == rid]

    assert wait_for(lambda: any(r["logger"] == "grace.access" for r in lines_for("srv-log-2")))
    first = {r["logger"] for r in lines_for("srv-log-1")}
    assert {"tests.grace.views", "grace.access"} <= first
    second = {r["logger"] for r in lines_for("srv-log-2")}
    assert {"tests.grace.views", "grace.access", "django.request"} <= second
    # No line of the server's own output is a stray (non-JSON) line.
    records = server_log_records(server)
    assert all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in records)


def test_json_500_when_the_error_log_table_is_gone(tmp_path):
    with GraceServer(tmp_path, TEST_SETTINGS) as srv:
        with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
            conn.execute("DROP TABLE grace_errorlog")
        response = httpx.get(srv.url + "/api/test/boom", headers={"X-Request-ID": "no-log"})
        error_body(response, 500)

        def errorlog_lines() -> list[dict]:
            return [
                r
                for r in server_log_records(srv)
                if r["logger"] == "grace.errorlog" and r["request_id"] == "no-log"
            ]

        lines = wait_for(errorlog_lines)
        assert lines, srv.log()
        assert lines[0]["level"] == "ERROR"
        assert "secret-detail-xyz" in lines[0]["traceback"]


def test_health_503_when_the_metrics_database_is_unreachable(tmp_path):
    env = {"GRACE_METRICS_DATABASE_URL": f"sqlite:///{tmp_path / 'missing-dir' / 'm.sqlite3'}"}
    with GraceServer(tmp_path, env, migrate_first=False) as srv:
        response = httpx.get(srv.url + "/api/health", timeout=10)
        body = error_body(response, 503)
        assert body["error"] == "unhealthy"
        assert "database:metrics" in body["message"]
        assert "database:default" not in body["message"]


def test_health_503_is_bounded_when_a_database_hangs(tmp_path):
    """PostgreSQL URL to a port that accepts and never answers: the check times out."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    env = {
        "GRACE_METRICS_DATABASE_URL": f"postgres://grace@127.0.0.1:{port}/grace",
        "GRACE_HEALTH_TIMEOUT": "1",
    }
    try:
        server = GraceServer(tmp_path, env, migrate_first=False)
        manage(server.env, "migrate", "--noinput")
        with server as srv:
            started = time.monotonic()
            response = httpx.get(srv.url + "/api/health", timeout=20)
            elapsed = time.monotonic() - started
            body = error_body(response, 503)
            assert "database:metrics" in body["message"]
            assert "timed out" in body["details"][0]["error"]
            assert elapsed < 1 + limit(4), elapsed  # the 1 s bound, a generous margin
            refused = httpx.get(srv.url + "/api/health", timeout=20)
            assert error_body(refused, 503)["details"][0]["check"] == "database:metrics"
    finally:
        silent.close()


def test_health_503_when_postgresql_refuses(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    env = {"GRACE_METRICS_DATABASE_URL": f"postgres://grace@127.0.0.1:{port}/grace"}
    server = GraceServer(tmp_path, env, migrate_first=False)
    manage(server.env, "migrate", "--noinput")
    with server as srv:
        body = error_body(httpx.get(srv.url + "/api/health", timeout=10), 503)
        (detail,) = body["details"]
        assert detail["check"] == "database:metrics"
        assert "OperationalError" in detail["error"]
