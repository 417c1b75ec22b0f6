"""``/ws/chat/``: chat over a websocket, with streamed replies and a working ``stop``.

Client frames::

    {"type": "message", "message": str, "domain": str, "conversation_id": str | null}
    {"type": "stop"}

Server frames (each with the ``request_id`` of the message it answers)::

    {"type": "start", "request_id", "conversation_id"}
    {"type": "token", "request_id", "text"}
    {"type": "done", ...the body of POST /api/chat/'s 200...}
    {"type": "error", "status", "error", "message", "details", "request_id"}

A generation runs in its own task, so ``stop`` is read while tokens stream; one
generation at a time per connection (a second ``message`` gets ``busy``). A bad
frame gets an ``error`` frame and the socket stays open; a frame above
``GRACE_WS_CLOSE_FRAME_BYTES`` closes it with 1009. Authentication: chat/ws_auth.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from chat.conf import chat_settings
from chat.ws_auth import ws_auth_problem, ws_subprotocol_choose
from chat.ws_service import (
    ReplyRefused,
    chat_input_validate,
    ws_owner_resolve,
    ws_reply,
    ws_throttle_check,
)
from grace.errorlog import errorlog_record
from grace.errors import error_body
from grace.request_id import request_id_new, request_id_reset, request_id_set

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
FRAME_TYPES = ("message", "stop")
# How long a disconnect waits for a cancelled generation to store its partial reply.
DISCONNECT_GRACE_SECONDS = 5.0


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """Thin edge: parse frames, run ``ws_reply`` in a task, shape frames."""

    generation: asyncio.Task[None] | None = None
    generation_request_id: str | None = None
    stop_event: asyncio.Event | None = None
    owner: Any = None

    async def connect(self) -> None:
        await self.accept(subprotocol=ws_subprotocol_choose(self.scope))
        token = request_id_set(request_id_new())
        try:
            problem = ws_auth_problem(self.scope)
            if problem is not None:
                await self.send_error(status=401, message=problem)
                await self.close(code=CLOSE_UNAUTHORIZED)
                return
            self.owner = await ws_owner_resolve(self.scope)
        except Exception as exc:
            await self._internal_error(exc)
            await self.close(code=CLOSE_INTERNAL_ERROR)
        finally:
            request_id_reset(token)

    async def disconnect(self, code: int) -> None:
        task = self.generation
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=DISCONNECT_GRACE_SECONDS)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
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
            await self.send_error(
                status=413,
                message=f"The frame is {size} bytes; the limit is {limit} bytes.",
                details=[{"field": "frame", "problem": "too_large", "limit": limit}],
            )
            return
        if bytes_data is not None:
            await self.send_error(status=400, message="Frames must be JSON text, not binary.")
            return
        try:
            content = json.loads(text_data or "")
        except ValueError as exc:
            await self.send_error(
                status=400,
                message="The frame is not valid JSON.",
                details=[{"field": "frame", "problem": "json_invalid", "message": str(exc)}],
            )
            return
        frame_type = content.get("type") if isinstance(content, dict) else None
        if frame_type == "message":
            await self.on_message(content, request_id)
        elif frame_type == "stop":
            await self.on_stop()
        else:
            await self.send_error(
                status=400,
                message="Unknown frame type; send 'message' or 'stop'.",
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
        data, details = chat_input_validate(content)
        if data is None:
            await self.send_error(
                status=422,
                error="validation_error",
                message="The request did not validate; see details.",
                details=details,
            )
            return
        try:
            ws_throttle_check(owner=self.owner, scope=self.scope)
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
            await self.send_json(
                {"type": "start", "request_id": request_id, "conversation_id": conversation_id}
            )

        async def on_token(text: str) -> None:
            await self.send_json({"type": "token", "request_id": request_id, "text": text})

        try:
            body = await ws_reply(
                data=data, owner=self.owner, on_start=on_start, on_token=on_token, stop=stop
            )
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
    return len(text) if text.isascii() else len(text.encode("utf-8"))
