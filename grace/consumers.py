"""``/ws/events/``: the live event feed, for active staff users only.

Anyone else is refused at the handshake (HTTP 403; close code 4403). A staff socket
gets ``{"type": "hello", "topics": [...]}`` and then one frame per event::

    {"type": "event", "topic": "chat.reply", "payload": {...}, "request_id": "...",
     "time": "2026-11-27T12:00:00.000+00:00"}

``?topics=chat,security`` limits the feed to some prefixes. Client frames are ignored,
except ``{"type": "ping"}`` which gets ``{"type": "pong"}``; more than
``GRACE_WS_BAD_FRAMES`` invalid ones (not JSON, too deep... grace/ws_guard.py) within
``GRACE_WS_BAD_FRAMES_SECONDS`` close the socket with 1008 after an ``error`` frame.

The staff session is checked for the life of the socket (grace/revocation.py): logged
out, the user deactivated or deleted, it gets an ``error`` frame (401) and closes with
4401; no longer staff, an ``error`` frame (403) and 4403.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from grace.errors import error_body
from grace.events import GROUP_PREFIX, PREFIXES, events_bind_loop
from grace.features import feature_enabled
from grace.ops_conf import ops_settings
from grace.request_id import request_id_new, request_id_reset, request_id_set
from grace.revocation import Credentials, Revoked, credentials_unwatch, credentials_watch
from grace.ws_guard import CLOSE_POLICY_VIOLATION, BadFrameBudget, FrameInvalid, frame_parse

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNAVAILABLE = 4503


def feed_topics(query_string: bytes) -> list[str]:
    """The prefixes asked for in ``?topics=a,b`` (all of them when absent or unknown)."""
    raw = parse_qs(query_string.decode("latin-1")).get("topics", [""])[0]
    asked = [name.strip() for name in raw.split(",") if name.strip() in PREFIXES]
    return asked or list(PREFIXES)


class EventFeedConsumer(AsyncJsonWebsocketConsumer):
    topics: list[str]
    groups: tuple[str, ...] = ()
    watch: int | None = None
    closed: bool = False
    budget: BadFrameBudget

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not (user is not None and user.is_active and user.is_staff):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if not feature_enabled("events") or self.channel_layer is None:
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        events_bind_loop()
        self.budget = BadFrameBudget(
            limit=ops_settings.WS_BAD_FRAMES, window=ops_settings.WS_BAD_FRAMES_SECONDS
        )
        self.topics = feed_topics(self.scope.get("query_string", b""))
        credentials = Credentials(
            user_id=user.pk, session_key=self.scope["session"].session_key, staff=True
        )
        self.groups = (*(GROUP_PREFIX + prefix for prefix in self.topics), *credentials.groups())
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.watch = credentials_watch(credentials, self.credentials_lost)
        await self.accept()
        await self.send_json({"type": "hello", "topics": self.topics})

    async def disconnect(self, code: int) -> None:
        if self.watch is not None:
            credentials_unwatch(self.watch)
        if self.channel_layer is None:
            return
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: Any = None, **kwargs: Any
    ) -> None:
        if self.closed:
            return
        try:
            content = frame_parse(text_data or "")
        except FrameInvalid as exc:
            await self._bad_frame(exc.message)
            return
        if content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def _bad_frame(self, message: str) -> None:
        if self.budget.spend():
            return  # ignored, as the feed ignores every frame but ping
        await self._close_with(code=CLOSE_POLICY_VIOLATION, **self.budget.exhausted(message))

    async def credentials_revoked(self, message: dict[str, Any]) -> None:
        """From the channel layer (grace/revocation.py): the staff user's session or
        account was revoked, in this process or another."""
        reason = str(message.get("reason") or "")
        await self.credentials_lost(
            Revoked(reason, status=403 if message.get("staff_only") else 401)
        )

    async def credentials_lost(self, problem: Revoked) -> None:
        if self.watch is not None:
            credentials_unwatch(self.watch)
        await self._close_with(
            status=problem.status,
            code=CLOSE_FORBIDDEN if problem.status == 403 else CLOSE_UNAUTHORIZED,
            message=problem.message,
            details=[{"reason": problem.reason}],
        )

    async def _close_with(
        self,
        *,
        status: int,
        code: int,
        message: str,
        error: str | None = None,
        details: list[Any] | None = None,
    ) -> None:
        """A last ``error`` frame, then close; nothing more is sent."""
        if self.closed:
            return
        self.closed = True
        token = request_id_set(request_id_new())
        try:
            body = error_body(status=status, error=error, message=message, details=details)
            await self.send_json({"type": "error", "status": status, **body})
            await self.close(code=code)
        finally:
            request_id_reset(token)

    async def grace_event(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        await self.send_json(
            {
                "type": "event",
                "topic": message.get("topic"),
                "payload": message.get("payload"),
                "request_id": message.get("request_id"),
                "time": message.get("time"),
            }
        )
