"""What every websocket of Grace checks before its consumer does any work.

- ``WsOriginValidator``: the handshake's ``Origin`` must be the server's own scheme-less
  host *and port* (from the ``Host`` header), or one of ``CSRF_TRUSTED_ORIGINS``;
  anything else is refused at the handshake (HTTP 403). Channels' own
  ``AllowedHostsOriginValidator`` (grace/asgi.py) only compares host names, so a page
  on ``http://localhost:9999`` could talk to a server on ``localhost:8000``.
- ``frame_parse``: a client's JSON frame, refused with a precise ``FrameInvalid``
  (always a 400 for the client, never an exception of the server) by the rules of
  request bodies (``grace.json_body``: depth checked before parsing, finite and short
  numbers, unique keys, no NUL or lone surrogate, an object at the top).
- ``BadFrameBudget``: how many invalid frames one socket may send in a window before
  it is closed (1008, policy violation).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from grace.json_body import InvalidJson, json_body_parse

MAX_DEPTH = 32
CLOSE_POLICY_VIOLATION = 1008


class FrameInvalid(ValueError):
    """A client frame Grace will not act on: ``message`` for the client, ``problem`` for
    the details (``syntax``, ``too_deep``, ``number_too_long``, ...)."""

    def __init__(self, message: str, /, *, problem: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.problem = problem
        self.detail = detail

    def details(self) -> list[dict[str, Any]]:
        return [{"field": "frame", "problem": self.problem, **self.detail}]


def frame_parse(text: str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The JSON object of a text frame, or ``FrameInvalid`` (never another exception):
    the rules of request bodies (``grace.json_body``), said of "the frame"."""
    try:
        return json_body_parse(
            raw=text.encode("utf-8", "surrogatepass"), max_depth=max_depth, subject="The frame"
        )
    except InvalidJson as exc:
        raise FrameInvalid(exc.message, problem=exc.problem, **exc.detail) from None


class BadFrameBudget:
    """At most ``limit`` invalid frames in any ``window`` seconds: ``spend()`` says
    whether this one is still within the budget (the socket closes when it is not)."""

    def __init__(self, *, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque(maxlen=limit + 1)

    def exhausted(self, last: str) -> dict[str, Any]:
        """The last error frame's fields (``status``, ``error``, ``message``,
        ``details``) when the budget is spent; ``last`` is the last frame's problem."""
        return {
            "status": 429,
            "error": "too_many_bad_frames",
            "message": f"More than {self.limit} invalid frames in {self.window:g} seconds; "
            "closing the connection.",
            "details": [
                {
                    "field": "frame",
                    "problem": "too_many_invalid",
                    "limit": self.limit,
                    "window_seconds": self.window,
                    "last": last,
                }
            ],
        }

    def spend(self) -> bool:
        now = time.monotonic()
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return len(self._times) <= self.limit


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the handshake's ``Origin`` is this server itself (same host and port as
    the ``Host`` header, the host in ``ALLOWED_HOSTS``) or a trusted origin."""
    origin = _header(scope, b"origin")
    if not origin:
        return False
    try:
        parsed = urlsplit(origin.strip().lower())
        origin_port = parsed.port or _default_port(parsed.scheme)
    except ValueError:
        return False
    if not parsed.hostname or origin_port is None or parsed.path not in ("", "/"):
        return False
    for trusted in getattr(settings, "CSRF_TRUSTED_ORIGINS", ()):
        pattern = urlsplit(str(trusted).lower())
        if pattern.scheme != parsed.scheme:
            continue
        if "*" in pattern.netloc:
            if is_same_domain(parsed.netloc, pattern.netloc.lstrip("*")):
                return True
        elif f"{parsed.scheme}://{parsed.netloc}" == f"{pattern.scheme}://{pattern.netloc}":
            return True
    host = _header(scope, b"host")
    if host:
        server_host, server_port = split_domain_port(host.lower())
        if not server_host:
            return False
        port = int(server_port) if server_port.isdigit() else _default_port(parsed.scheme)
    else:
        server = scope.get("server") or (None, None)
        server_host, port = (str(server[0]).lower(), server[1]) if server[0] else ("", None)
    if not validate_host(server_host, _allowed_hosts()):
        return False
    return bool(parsed.hostname.strip("[]") == server_host.strip("[]") and origin_port == port)


def _allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


class WsOriginValidator:
    """ASGI middleware: refuse the handshake (HTTP 403) unless ``origin_allowed``."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
