"""An oversized body is refused from its Content-Length before it is read, with the one
error body and the security headers (grace/http_guard.py, in grace.asgi.application).

Before: the 413 came from Django's middleware after the server and Django's handler had
read (and spooled) the whole body; a declared 2 GiB body filled the disk first.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from typing import Any

import pytest

from grace.asgi import application
from tests.grace.test_security_headers import HEADERS
from tests.servers import ROOT, GraceServer

TWO_GIB = 2 * 1024**3


def scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


async def call(
    path: str, headers: list[tuple[bytes, bytes]], receive: Any
) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await application(scope(path, headers), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


def assert_413(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert status == 413
    payload = json.loads(body)
    assert set(payload) == {"error", "message", "details", "request_id"}
    assert payload["error"] == "payload_too_large"
    assert payload["details"] == [{"field": "body", "problem": "too_large", "limit": 65536}]
    assert payload["request_id"] == headers["x-request-id"]
    for name, value in HEADERS.items():
        assert headers[name.lower()] == value
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "camera=()" in headers["permissions-policy"]
    return payload


@pytest.mark.parametrize("path", ["/api/chat/", "/admin/login/", "/"])
async def test_declared_2_gib_is_refused_without_reading_the_body(path):
    async def receive() -> dict[str, Any]:
        pytest.fail("receive() was called for a body declared over the limit")

    result = await call(
        path,
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(TWO_GIB).encode()),
            (b"x-request-id", b"big-body-1"),
        ],
        receive,
    )
    payload = assert_413(*result)
    assert payload["message"] == (f"The request body is {TWO_GIB} bytes; the limit is 65536 bytes.")
    assert payload["request_id"] == "big-body-1"


async def test_chunked_body_is_cut_at_the_limit():
    """No Content-Length: counted as it arrives; reading stops once past the limit."""
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls > 100:
            pytest.fail("kept reading past the limit")
        return {"type": "http.request", "body": b"x" * 10000, "more_body": True}

    result = await call("/api/chat/", [(b"content-type", b"application/json")], receive)
    payload = assert_413(*result)
    assert payload["message"] == "The request body is over the limit of 65536 bytes."
    assert calls == 7  # 70,000 bytes read: the first chunk over 65,536


@pytest.mark.django_db(transaction=True)
async def test_responses_keep_their_headers_and_gain_the_missing_ones():
    body = b'{"message": '
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await done.wait()  # Django listens for a disconnect while it answers
        return {"type": "http.disconnect"}

    try:
        status, headers, content = await call(
            "/api/chat/",
            [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            receive,
        )
    finally:
        done.set()
    assert status == 401  # anonymous: Django's answer, through the guard
    assert headers["www-authenticate"].startswith("Bearer")
    assert list(headers).count("x-frame-options") == 1
    for name, value in HEADERS.items():
        assert headers[name.lower()] == value


class UvicornServer(GraceServer):
    """grace.asgi:application under uvicorn, which hands the body over as it arrives."""

    def __enter__(self) -> UvicornServer:
        self._log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--lifespan",
                "off",
                self.app,
            ],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()
        return self


@pytest.mark.slow
def test_uvicorn_answers_413_after_the_headers(tmp_path):
    """A client declares 2 GiB, sends 10 bytes, and reads the 413 while the rest of its
    body is still unsent; the server is fine afterwards."""
    with UvicornServer(tmp_path) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/chat/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {TWO_GIB}\r\n\r\n".encode()
                + b'{"message"'
            )
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 413"), lines[0]
        headers = {
            k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])
        }
        assert_413(413, headers, body)
        again = asyncio.run(_health(server.port))  # (503: this server has no tables)
        assert again.startswith(b"HTTP/1.1 ") and b'"request_id"' in again


async def _health(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data
