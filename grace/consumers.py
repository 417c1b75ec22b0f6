"""``/ws/events/``: the live event feed, for active staff users only.

Anyone else is refused at the handshake (HTTP 403; close code 4403). A staff socket
gets ``{"type": "hello", "topics": [...]}`` and then one frame per event::

    {"type": "event", "topic": "chat.reply", "payload": {...}, "request_id": "...",
     "time": "2026-11-27T12:00:00.000+00:00"}

``?topics=chat,security`` limits the feed to some prefixes. Client frames are ignored,
except ``{"type": "ping"}`` which gets ``{"type": "pong"}``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from grace.events import GROUP_PREFIX, PREFIXES, events_bind_loop
from grace.features import feature_enabled

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
CLOSE_UNAVAILABLE = 4503


def feed_topics(query_string: bytes) -> list[str]:
    """The prefixes asked for in ``?topics=a,b`` (all of them when absent or unknown)."""
    raw = parse_qs(query_string.decode("latin-1")).get("topics", [""])[0]
    asked = [name.strip() for name in raw.split(",") if name.strip() in PREFIXES]
    return asked or list(PREFIXES)


class EventFeedConsumer(AsyncJsonWebsocketConsumer):
    topics: list[str]

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user is not None and user.is_active and user.is_staff):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if not feature_enabled("events") or self.channel_layer is None:
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        events_bind_loop()
        self.topics = feed_topics(self.scope.get("query_string", b""))
        for prefix in self.topics:
            await self.channel_layer.group_add(GROUP_PREFIX + prefix, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "topics": self.topics})

    async def disconnect(self, code: int) -> None:
        if self.channel_layer is None:
            return
        for prefix in getattr(self, "topics", []):
            await self.channel_layer.group_discard(GROUP_PREFIX + prefix, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: Any = None, **kwargs: Any
    ) -> None:
        try:
            content = await self.decode_json(text_data or "")
        except ValueError:
            return
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def grace_event(self, message: dict[str, Any]) -> None:
        await self.send_json(
            {
                "type": "event",
                "topic": message.get("topic"),
                "payload": message.get("payload"),
                "request_id": message.get("request_id"),
                "time": message.get("time"),
            }
        )
