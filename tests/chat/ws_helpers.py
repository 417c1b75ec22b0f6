"""Helpers for the websocket consumer tests: a communicator on the real ASGI stack."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from grace.asgi import application
from tests.timing import limit

ORIGIN = b"http://testserver"


def ws(
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
    origin: bytes | None = ORIGIN,
) -> WebsocketCommunicator:
    """A communicator through grace.asgi (origin check, session auth, token auth)."""
    all_headers = [(b"host", b"testserver")]
    if origin is not None:
        all_headers.append((b"origin", origin))
    all_headers += headers or []
    return WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=all_headers,
        subprotocols=["grace.v1"] if subprotocols is None else subprotocols,
    )


async def session_cookie(username: str = "alice") -> tuple[Any, tuple[bytes, bytes]]:
    """A user and the Cookie header of a logged-in session for them."""

    def make() -> tuple[Any, str]:
        user = get_user_model().objects.create_user(username, password="pw-not-used-123")
        client = Client()
        client.force_login(user)
        return user, client.cookies["sessionid"].value

    user, key = await sync_to_async(make)()
    return user, (b"cookie", f"sessionid={key}".encode())


async def receive_until(
    communicator: WebsocketCommunicator, frame_type: str, *, timeout: float = 10.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Frames until (and including) the first of ``frame_type``: (that frame, all before)."""
    seen: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + limit(timeout)
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        assert remaining > 0, f"no {frame_type!r} frame within {timeout}s; got {seen}"
        frame = await communicator.receive_json_from(timeout=remaining)
        if frame.get("type") == frame_type:
            return frame, seen
        seen.append(frame)


async def send_json(communicator: WebsocketCommunicator, data: Any) -> None:
    await communicator.send_to(text_data=json.dumps(data))
