"""Websocket routes of the chat app (included by grace/routing.py)."""

from __future__ import annotations

from typing import Any

from django.urls import path

from chat.consumers import ChatConsumer
from chat.ws_auth import WsTokenAuthMiddleware
from grace.ws_guard import WsOriginValidator

websocket_urlpatterns: list[Any] = [
    # The origin's port too, not only its host (grace/ws_guard.py).
    path("ws/chat/", WsOriginValidator(WsTokenAuthMiddleware(ChatConsumer.as_asgi()))),
]
