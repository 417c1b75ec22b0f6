"""Websocket routes of every app.

Each route is wrapped in ``WsOriginValidator`` (grace/ws_guard.py): grace/asgi.py's
``AllowedHostsOriginValidator`` compares host names only, not ports."""

from __future__ import annotations

from typing import Any

from django.urls import path

from chat.routing import websocket_urlpatterns as chat_websocket_urlpatterns
from grace.consumers import EventFeedConsumer
from grace.ws_guard import WsOriginValidator

websocket_urlpatterns: list[Any] = [
    *chat_websocket_urlpatterns,
    # Staff-only live event feed; the origin's port is checked too (grace/ws_guard.py).
    path("ws/events/", WsOriginValidator(EventFeedConsumer.as_asgi())),
]
