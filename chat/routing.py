"""Websocket routes of the chat app (included by grace/routing.py)."""

from __future__ import annotations

from typing import Any

from django.urls import path

from chat.consumers import ChatConsumer
from chat.ws_auth import WsTokenAuthMiddleware

websocket_urlpatterns: list[Any] = [
    path("ws/chat/", WsTokenAuthMiddleware(ChatConsumer.as_asgi())),
]
