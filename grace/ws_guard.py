"""What every websocket of Grace checks before its consumer does any work.

- ``WsOriginValidator``: the handshake's ``Origin`` must be the server's own scheme-less
  host *and port* (from the ``Host`` header), or one of ``CSRF_TRUSTED_ORIGINS``;
  anything else is refused at the handshake (HTTP 403). Channels' own
  ``AllowedHostsOriginValidator`` (grace/asgi.py) only compares host names, so a page
  on ``http://localhost:9999`` could talk to a server on ``localhost:8000``.
- ``frame_parse``: a client's JSON frame, refused with a precise ``FrameInvalid``
  (always a 400 for the client, never an exception of the server) when it nests deeper
  than ``MAX_DEPTH`` (checked by a linear scan *before* ``json.loads`` recurses),
  holds a number longer than ``MAX_NUMBER_CHARS``, an overflowing float, ``NaN`` or
  ``Infinity``, a lone surrogate, or is not an object.
- ``BadFrameBudget``: how many invalid frames one socket may send in a window before
  it is closed (1008, policy violation).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import deque
from itertools import accumulate
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 100
CLOSE_POLICY_VIOLATION = 1008

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


class FrameInvalid(ValueError):
    """A client frame Grace will not act on: ``message`` for the client, ``problem`` for
    the details (``json_invalid``, ``too_deep``, ``number_too_long``, ...)."""

    def __init__(self, message: str, /, *, problem: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.problem = problem
        self.detail = detail

    def details(self) -> list[dict[str, Any]]:
        return [{"field": "frame", "problem": self.problem, **self.detail}]


def json_depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest, in linear time and without
    recursion: brackets inside strings do not count; after an unterminated string,
    nothing does (``json.loads`` will refuse it anyway)."""
    outside = _STRING.sub("", text)
    quote = outside.find('"')
    if quote >= 0:
        outside = outside[:quote]
    brackets = _NOT_BRACKETS.sub("", outside)
    if not brackets:
        return 0
    return max(0, *accumulate(map(_DELTA.__getitem__, brackets)))


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_CHARS:
        raise FrameInvalid(
            f"The frame holds a number of {len(text.lstrip('-'))} digits; at most "
            f"{MAX_NUMBER_CHARS} are allowed.",
            problem="number_too_long",
            limit=MAX_NUMBER_CHARS,
        )
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise FrameInvalid(
            f"The frame holds a number of {len(text)} characters; at most "
            f"{MAX_NUMBER_CHARS} are allowed.",
            problem="number_too_long",
            limit=MAX_NUMBER_CHARS,
        )
    value = float(text)
    if not math.isfinite(value):
        raise FrameInvalid(
            f"The frame holds a number too large for a float: {text}.",
            problem="number_out_of_range",
        )
    return value


def _parse_constant(name: str) -> Any:
    raise FrameInvalid(
        f"The frame holds {name}, which is not JSON (RFC 8259 has no NaN or Infinity).",
        problem="number_not_finite",
        input=name,
    )


def _check_strings(value: Any) -> None:
    """Refuse lone surrogates (``"\\ud800"``): valid JSON, but no UTF-8 text, so they
    would fail later at the database or the socket. Depth is bounded already."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FrameInvalid(
                "The frame holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair), "
                "which is not text.",
                problem="lone_surrogate",
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def frame_parse(text: str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The JSON object of a text frame, or ``FrameInvalid`` (never another exception)."""
    # Fast path: fewer opening brackets than the limit cannot nest deeper than it.
    opening = text.count("[") + text.count("{")
    if opening > max_depth and json_depth(text) > max_depth:
        raise FrameInvalid(
            f"The frame nests deeper than {max_depth} levels.",
            problem="too_deep",
            limit=max_depth,
        )
    try:
        content = json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
        )
    except FrameInvalid:
        raise
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError (a ValueError) says where: "Expecting value: line 1 column 1".
        raise FrameInvalid(
            "The frame is not valid JSON.", problem="json_invalid", message=str(exc)
        ) from None
    if not isinstance(content, dict):
        kind = _JSON_TYPES.get(type(content), "not an object")
        raise FrameInvalid(f"A frame must be a JSON object, not {kind}.", problem="not_an_object")
    if "\\u" in text and _LONE_SURROGATE_ESCAPE.search(text):
        _check_strings(content)
    return content


class BadFrameBudget:
    """At most ``limit`` invalid frames in any ``window`` seconds: ``spend()`` says
    whether this one is still within the budget (the socket closes when it is not)."""

    def __init__(self, *, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque(maxlen=limit + 1)

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
