"""``POST /api/chat/stream``: Grace's reply as server-sent events, token by token.

The body, authentication, throttles and the errors that come before any reply (401,
422, 429, a conversation that is not yours) are those of ``POST /api/chat/``, as
plain JSON error responses. Once the reply starts, the answer is ``text/event-stream``
with the websocket's events; each event's ``data`` is the JSON of the websocket frame
of the same name::

    event: start   data: {"type": "start", "request_id", "conversation_id"}
    event: token   data: {"type": "token", "request_id", "text"}      (one per piece)
    event: done    data: {"type": "done", ...the body of POST /api/chat/'s 200...}
    event: error   data: {"type": "error", "status", "error", "message", "details", "request_id"}

A client that disconnects stops generation (the upstream stream is closed, the local
model stops): the pipeline stores the partial reply with the flag ``stopped``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse
from ninja import Router

from chat.auth import chat_auth
from chat.exceptions import ChatRefused, ConversationNotFound
from chat.pipeline import chat_reply
from chat.schemas import ChatIn
from chat.throttling import chat_throttles
from grace.api import ApiError, errors
from grace.auth import Owner
from grace.errorlog import errorlog_record
from grace.errors import error_body
from grace.request_id import request_id_get

logger = logging.getLogger(__name__)

router = Router(tags=["chat"], auth=chat_auth(), throttle=chat_throttles())

# How long a disconnect waits for the stopped pipeline to store the partial reply.
STOP_GRACE_SECONDS = 5.0
_END: tuple[str, dict[str, Any]] = ("end", {})


def sse_frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _ReplyStream:
    """One reply running in its own task; its events queue up for the response."""

    def __init__(self, payload: ChatIn, owner: Owner, request_id: str | None) -> None:
        self.request_id = request_id
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            chat_reply(
                message=payload.message,
                owner=owner,
                domain=payload.domain,
                conversation_id=payload.conversation_id,
                request_id=request_id,
                on_token=self.on_token,
                stop=self.stop,
            )
        )
        self.task.add_done_callback(lambda _: self.queue.put_nowait(_END))

    async def on_token(self, text: str) -> None:
        self.queue.put_nowait(
            ("token", {"type": "token", "request_id": self.request_id, "text": text})
        )

    async def halt(self) -> None:
        """The client is gone: stop generation and let the pipeline store what it has."""
        if not self.task.done():
            self.stop.set()
            await asyncio.wait({self.task}, timeout=STOP_GRACE_SECONDS)
            if not self.task.done():
                self.task.cancel()
            logger.info("chat stream: the client went away; generation stopped")

    async def events(
        self, first: tuple[str, dict[str, Any]], conversation_id: str | None
    ) -> AsyncIterator[bytes]:
        try:
            start = {"type": "start", "request_id": self.request_id}
            frames = [sse_frame("start", {**start, "conversation_id": conversation_id})]
            item = first
            while item is not _END:
                frames.append(sse_frame(*item))
                if self.queue.empty():  # pieces that queued up meanwhile go in one write
                    yield b"".join(frames)
                    frames = []
                item = await self.queue.get()
            yield b"".join([*frames, self.final()])
        finally:
            await self.halt()

    def final(self) -> bytes:
        exc = self.task.exception()
        if exc is None:
            return sse_frame("done", {"type": "done", **self.task.result()})
        logger.error("chat stream failed", exc_info=exc)
        errorlog_record(exc=exc, request_id=self.request_id, wait=False)
        return sse_frame("error", {"type": "error", "status": 500, **error_body(status=500)})


@router.post(
    "/stream",
    response={200: None, **errors(401, 403, 415, 422, 429, 503)},
    summary="Send a message; get Grace's reply as server-sent events",
    description="The same body and errors as `POST /api/chat/`; then `text/event-stream` "
    "with the events `start`, `token` (one per piece), and `done` (the 200 body) or "
    "`error` (the error body). Disconnecting stops generation; the partial reply is "
    "stored with the flag `stopped`.",
    openapi_extra={
        "responses": {200: {"description": "Events", "content": {"text/event-stream": {}}}}
    },
)
async def chat_stream(request: HttpRequest, payload: ChatIn) -> StreamingHttpResponse:
    owner: Owner = request.auth  # type: ignore[attr-defined]
    stream = _ReplyStream(payload, owner, request_id_get())
    try:
        # The first piece (or the end) tells that the conversation check passed.
        first = await stream.queue.get()
    except asyncio.CancelledError:
        await stream.halt()
        raise
    if first is _END and stream.task.exception() is not None:
        _refuse(stream.task.exception(), payload)
    conversation_id = str(payload.conversation_id) if payload.conversation_id else None
    response = StreamingHttpResponse(
        stream.events(first, conversation_id), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _refuse(exc: BaseException | None, payload: ChatIn) -> None:
    """The errors that come before any reply: the same responses as POST /api/chat/."""
    if isinstance(exc, ChatRefused):
        raise exc
    if isinstance(exc, ConversationNotFound):
        raise ApiError(
            exc.MESSAGE,
            status=422,
            error="validation_error",
            details=exc.details(),
        )
