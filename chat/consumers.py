"""``/ws/chat/``: chat over a websocket, with streamed replies and a working ``stop``.

Client frames::

    {"type": "message", "message": str, "domain": str, "conversation_id": str | null}
    {"type": "stop"}
    {"type": "regenerate", "message_id": str, "domain": str | null,
     "conversation_id": str | null}

``regenerate`` answers a stored message again (chat/regenerate.py; the same as
``POST /api/chat/conversations/{id}/messages/{message_id}/regenerate``): the same
``start``, ``token`` and ``done`` frames, ``done`` carrying the new reply; ``error``
404 for a message that is not the caller's, 422 for one that cannot be answered again.

Server frames (each with the ``request_id`` of the message it answers)::

    {"type": "start", "request_id", "conversation_id"}
    {"type": "token", "request_id", "text"}
    {"type": "done", ...the body of POST /api/chat/'s 200...}
    {"type": "error", "status", "error", "message", "details", "request_id"}

A generation runs in its own task, so ``stop`` is read while tokens stream; one
generation at a time per connection (a second ``message`` gets ``busy``). A bad
frame (any JSON a client can send: too deep, huge numbers, NaN, not an object... see
grace/ws_guard.py) gets an ``error`` frame and the socket stays open, up to
``GRACE_WS_BAD_FRAMES`` of them in ``GRACE_WS_BAD_FRAMES_SECONDS``: the next gets a last
``error`` frame (429) and closes the socket with 1008. A frame above
``GRACE_WS_CLOSE_FRAME_BYTES`` closes it with 1009. Authentication: chat/ws_auth.py;
a token or session revoked while the socket is open gets an ``error`` frame (401), the
generation in flight is cancelled (its partial reply stored) and the socket closes with
4401 (grace/revocation.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from chat.conf import chat_settings
from chat.regenerate import ws_regenerate
from chat.schemas import ChatIn, RegenerateFrame
from chat.ws_auth import ws_auth_problem, ws_credentials, ws_subprotocol_choose
from chat.ws_service import (
    ReplyRefused,
    chat_input_validate,
    ws_owner_resolve,
    ws_reply,
    ws_throttle_check,
)
from grace.errorlog import errorlog_record
from grace.errors import error_body
from grace.ops_conf import ops_settings
from grace.request_id import request_id_new, request_id_reset, request_id_set
from grace.revocation import Revoked, credentials_unwatch, credentials_watch
from grace.ws_guard import CLOSE_POLICY_VIOLATION, BadFrameBudget, FrameInvalid, frame_parse

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
FRAME_TYPES = ("message", "stop", "regenerate")
# How long a disconnect waits for a cancelled generation to store its partial reply.
DISCONNECT_GRACE_SECONDS = 5.0


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """Thin edge: parse frames, run ``ws_reply`` in a task, shape frames."""

    generation: asyncio.Task[None] | None = None
    generation_request_id: str | None = None
    stop_event: asyncio.Event | None = None
    owner: Any = None
    closed: bool = False
    """Closed by the server (revoked credentials, too many bad frames): frames still
    produced by a generation being cancelled are not sent."""
    watch: int | None = None
    groups: tuple[str, ...] = ()
    budget: BadFrameBudget

    async def connect(self) -> None:
        self.budget = BadFrameBudget(
            limit=ops_settings.WS_BAD_FRAMES, window=ops_settings.WS_BAD_FRAMES_SECONDS
        )
        await self.accept(subprotocol=ws_subprotocol_choose(self.scope))
        token = request_id_set(request_id_new())
        try:
            problem = ws_auth_problem(self.scope)
            if problem is not None:
                await self.send_error(status=401, message=problem)
                await self.close(code=CLOSE_UNAUTHORIZED)
                return
            self.owner = await ws_owner_resolve(self.scope)
            credentials = ws_credentials(self.scope)
            if credentials is not None:
                if self.channel_layer is not None:
                    self.groups = tuple(credentials.groups())
                    for group in self.groups:
                        await self.channel_layer.group_add(group, self.channel_name)
                self.watch = credentials_watch(credentials, self.credentials_lost)
        except Exception as exc:
            await self._internal_error(exc)
            await self.close(code=CLOSE_INTERNAL_ERROR)
        finally:
            request_id_reset(token)

    async def disconnect(self, code: int) -> None:
        if self.watch is not None:
            credentials_unwatch(self.watch)
        if self.channel_layer is not None:
            for group in self.groups:
                await self.channel_layer.group_discard(group, self.channel_name)
        task = self.generation
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=DISCONNECT_GRACE_SECONDS)

    async def credentials_revoked(self, message: dict[str, Any]) -> None:
        """From the channel layer (grace/revocation.py): this socket's token, user or
        session was revoked, in this process or another."""
        if message.get("staff_only"):
            return  # a demoted staff user may still chat
        await self.credentials_lost(Revoked(str(message.get("reason") or "")))

    async def credentials_lost(self, problem: Revoked) -> None:
        """Cancel the generation in flight, say why, close with 4401."""
        if self.closed:
            return
        self.closed = True
        if self.watch is not None:
            credentials_unwatch(self.watch)
        task = self.generation
        if task is not None and not task.done():
            task.cancel()  # the pipeline stores the partial reply
        token = request_id_set(request_id_new())
        try:
            logger.info("websocket closed: credentials revoked (%s)", problem.reason)
            await self.send_error(
                status=401,
                error="unauthorized",
                message=problem.message,
                details=[{"reason": problem.reason}],
            )
            await self.close(code=CLOSE_UNAUTHORIZED)
        finally:
            request_id_reset(token)
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_GRACE_SECONDS)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closed:
            return
        request_id = request_id_new()
        token = request_id_set(request_id)
        try:
            await self._receive(text_data, bytes_data, request_id)
        except Exception as exc:
            await self._internal_error(exc)
        finally:
            request_id_reset(token)

    async def _receive(
        self, text_data: str | None, bytes_data: bytes | None, request_id: str
    ) -> None:
        size = len(bytes_data) if bytes_data is not None else _utf8_size(text_data or "")
        if size > chat_settings.WS_CLOSE_FRAME_BYTES:
            logger.warning("websocket frame of %s bytes closed the socket", size)
            await self.close(code=CLOSE_TOO_BIG)
            return
        if size > chat_settings.WS_MAX_FRAME_BYTES:
            limit = chat_settings.WS_MAX_FRAME_BYTES
            await self.send_bad_frame(
                status=413,
                message=f"The frame is {size} bytes; the limit is {limit} bytes.",
                details=[{"field": "frame", "problem": "too_large", "limit": limit}],
            )
            return
        if bytes_data is not None:
            await self.send_bad_frame(status=400, message="Frames must be JSON text, not binary.")
            return
        try:
            content = frame_parse(text_data or "")
        except FrameInvalid as exc:
            await self.send_bad_frame(status=400, message=exc.message, details=exc.details())
            return
        frame_type = content.get("type")
        if frame_type in ("message", "regenerate"):
            await self.on_message(content, request_id)
        elif frame_type == "stop":
            await self.on_stop()
        else:
            await self.send_bad_frame(
                status=400,
                message="Unknown frame type; send 'message', 'stop' or 'regenerate'.",
                details=[
                    {
                        "field": "type",
                        "problem": "unknown" if frame_type is not None else "missing",
                        "expected": list(FRAME_TYPES),
                        **({"input": frame_type} if isinstance(frame_type, str) else {}),
                    }
                ],
            )

    async def on_message(self, content: dict[str, Any], request_id: str) -> None:
        if self.generation is not None and not self.generation.done():
            await self.send_error(
                status=409,
                error="busy",
                message="A reply is still being generated; wait for it or send 'stop'.",
                details=[{"active_request_id": self.generation_request_id}],
            )
            return
        data, details = chat_input_validate(
            content, schema=RegenerateFrame if content["type"] == "regenerate" else ChatIn
        )
        if data is None:
            await self.send_bad_frame(
                status=422,
                error="validation_error",
                message="The request did not validate; see details.",
                details=details,
            )
            return
        try:
            await ws_throttle_check(owner=self.owner, scope=self.scope)
        except ReplyRefused as exc:
            await self.send_refusal(exc)
            return
        self.generation_request_id = request_id
        self.stop_event = asyncio.Event()
        # The task copies the current context: the message's request ID goes with it.
        self.generation = asyncio.create_task(self._reply(data, request_id, self.stop_event))

    async def on_stop(self) -> None:
        task = self.generation
        if task is None or task.done() or self.stop_event is None:
            logger.debug("stop with no generation running")
            return
        # The pipeline cancels generation at once, stores the partial reply with the
        # flag ``stopped`` and returns it: the client gets a ``done`` frame.
        self.stop_event.set()

    async def _reply(self, data: Any, request_id: str, stop: asyncio.Event) -> None:
        started = time.perf_counter()

        async def on_start(conversation_id: str | None) -> None:
            if self.closed:
                return
            await self.send_json(
                {"type": "start", "request_id": request_id, "conversation_id": conversation_id}
            )

        async def on_token(text: str) -> None:
            if self.closed:
                return
            await self.send_json({"type": "token", "request_id": request_id, "text": text})

        try:
            answer = ws_regenerate if isinstance(data, RegenerateFrame) else ws_reply
            body = await answer(
                data=data, owner=self.owner, on_start=on_start, on_token=on_token, stop=stop
            )
            if self.closed:
                return
            await self.send_json({"type": "done", **body})
            logger.info(
                "websocket reply done in %s ms (degraded=%s)",
                int((time.perf_counter() - started) * 1000),
                body.get("degraded"),
            )
        except ReplyRefused as exc:
            await self.send_refusal(exc)
        except asyncio.CancelledError:
            logger.info("websocket reply cancelled (the client went away)")
            raise
        except Exception as exc:
            await self._internal_error(exc)

    async def send_error(
        self,
        *,
        status: int,
        message: str | None = None,
        error: str | None = None,
        details: list[Any] | None = None,
    ) -> None:
        body = error_body(status=status, error=error, message=message, details=details)
        await self.send_json({"type": "error", "status": status, **body})

    async def send_bad_frame(
        self,
        *,
        status: int,
        message: str,
        error: str | None = None,
        details: list[Any] | None = None,
    ) -> None:
        """The error frame of an invalid frame, within the socket's budget; past it, a
        last error frame and close 1008: invalid frames cost a scan each, never more."""
        if self.budget.spend():
            await self.send_error(status=status, message=message, error=error, details=details)
            return
        self.closed = True
        logger.warning(
            "websocket closed: more than %s invalid frames in %ss",
            self.budget.limit, self.budget.window,
        )
        await self.send_error(**self.budget.exhausted(message))
        await self.close(code=CLOSE_POLICY_VIOLATION)

    async def send_refusal(self, exc: ReplyRefused) -> None:
        await self.send_error(
            status=exc.status, error=exc.error, message=exc.message, details=exc.details
        )

    async def _internal_error(self, exc: BaseException) -> None:
        """Never a silent close: an error frame for the client, a row in the error log."""
        logger.exception("websocket consumer error", exc_info=exc)
        request = SimpleNamespace(
            path=self.scope.get("path", "/ws/chat/"),
            method="WEBSOCKET",
            user=self.scope.get("user"),
        )
        await asyncio.to_thread(errorlog_record, exc=exc, request=request)
        try:
            await self.send_error(status=500)
        except Exception:
            logger.exception("could not send the error frame")


def _utf8_size(text: str) -> int:
    # A str of n characters is n..4n bytes in UTF-8; encode only when it matters.
    # surrogatepass: a lone surrogate (refused later, by frame_parse) must not raise here.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
