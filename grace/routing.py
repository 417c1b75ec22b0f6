"""Websocket routes of every app."""

from __future__ import annotations

from typing import Any

from django.urls import path

from chat.routing import websocket_urlpatterns as chat_websocket_urlpatterns
from grace.consumers import EventFeedConsumer

websocket_urlpatterns: list[Any] = [
    *chat_websocket_urlpatterns,
    path("ws/events/", EventFeedConsumer.as_asgi()),  # staff-only live event feed
]
