"""Helpers for the foundation tests: the error-body contract, log capture, raw ASGI/HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from django.core.handlers.asgi import ASGIHandler
from pythonjsonlogger.json import JsonFormatter

from tests.timing import wait_until

ERROR_KEYS = {"error", "message", "details", "request_id"}


def assert_error(response: Any, status: int, error: str | None = None) -> dict[str, Any]:
    """The one error body, with the request ID of the header; never a traceback."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    assert body["request_id"] and body["request_id"] == response["X-Request-ID"]
    if error is not None:
        assert body["error"] == error, body
    text = response.content.decode()
    assert "Traceback" not in text and "secret-detail" not in text
    return body


def json_handler() -> logging.StreamHandler:
    """The project's stderr handler (the one with the JSON formatter)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter) and isinstance(
            handler, logging.StreamHandler
        ):
            return handler
    raise AssertionError("no JSON stderr handler configured on the root logger")


class LogCapture:
    """What the project's stderr handler wrote, as text and as parsed JSON lines."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        lines = [line for line in self.text.splitlines() if line.strip()]
        return [json.loads(line) for line in lines]  # every line must be JSON


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``tests.timing.wait_until`` (timeout scaled by GRACE_TEST_TIME_FACTOR), positional."""
    return wait_until(predicate, timeout=timeout, interval=0.05, message="grace test condition")


async def asgi_call(
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    chunks: Iterable[bytes] = (),
) -> tuple[int, dict[str, str], bytes]:
    """Drive Django's own ASGI handler (as daphne does): the body arrives in chunks."""
    pending = list(chunks) or [b""]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(pending) - 1}
        for i, chunk in enumerate(pending)
    ]
    sent: list[dict[str, Any]] = []
    disconnect = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    await ASGIHandler()(scope, receive, send)
    disconnect.set()
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, body


def raw_http(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (httpx refuses bad headers) and parse the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return status, headers, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def chunked(body: bytes, size: int = 8192) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
