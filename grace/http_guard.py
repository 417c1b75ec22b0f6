"""ASGI middleware in front of Django for HTTP: body limit and security headers.

A request whose ``Content-Length`` declares more than ``GRACE_MAX_BODY_BYTES`` is
answered 413 (the one error body) before any of its body is read: ``receive()`` is never
called. A body sent without a length (chunked) is counted as it arrives and cut at the
limit: Django stops reading it and the client gets the same 413. Every response, these
and the ones Django makes outside its middleware (a request it cannot build), gets the
security headers (grace/headers.py) it lacks.

Whether the body was already read depends on the server: uvicorn hands it to the app as
it arrives, so a declared 2 GiB body is refused after its headers; daphne buffers the
whole body before it calls the app (docs/security.md: put a proxy with a body limit in
front of it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from grace.errors import error_body
from grace.headers import security_headers
from grace.ops_conf import ops_settings
from grace.request_id import HEADER, request_id_accept, request_id_reset, request_id_set

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


class HttpGuard:
    """Wraps an ASGI application; other scope types (websocket, lifespan) pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = ops_settings.MAX_BODY_BYTES
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            logger.warning(
                "request body of %s bytes refused before reading (limit %s): %s %s",
                declared,
                limit,
                scope.get("method"),
                scope.get("path"),
            )
            await _too_large(scope, send, limit=limit, size=declared)
            return

        state = {"received": 0, "cut": False, "started": False}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and declared is None:
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["cut"] = True
                    return {"type": "http.disconnect"}  # Django stops reading: RequestAborted
            return message

        async def headed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                message = {**message, "headers": _with_security_headers(message)}
            await send(message)

        await self.app(scope, counted_receive, headed_send)
        if state["cut"] and not state["started"]:
            await _too_large(scope, send, limit=limit, size=None)


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length header, or None without one (or an unreadable one: Django's
    own checks answer that)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _with_security_headers(message: Message) -> list[tuple[bytes, bytes]]:
    headers = list(message.get("headers", ()))
    present = {bytes(name).lower() for name, _ in headers}
    for name, value in security_headers().items():
        if name.lower().encode() not in present:
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return headers


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"x-request-id":
            return bytes(value).decode("latin-1")
    return None


async def _too_large(scope: Scope, send: Send, *, limit: int, size: int | None) -> None:
    rid = request_id_accept(_incoming_request_id(scope))
    token = request_id_set(rid)
    try:
        message = (
            f"The request body is {size} bytes; the limit is {limit} bytes."
            if size is not None
            else f"The request body is over the limit of {limit} bytes."
        )
        body = error_body(
            status=413,
            message=message,
            details=[{"field": "body", "problem": "too_large", "limit": limit}],
        )
    finally:
        request_id_reset(token)
    content = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (HEADER.lower().encode(), rid.encode()),
        (b"connection", b"close"),  # the unread body makes the connection unusable
    ]
    start: Message = {"type": "http.response.start", "status": 413, "headers": headers}
    await send({**start, "headers": _with_security_headers(start)})
    await send({"type": "http.response.body", "body": content})
