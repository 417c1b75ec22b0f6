"""The websocket's and the page's view of the chat API: its input rules, its callers,
its throttles and its pipeline.

A thin adapter over ``chat.schemas``, ``chat.auth``, ``chat.throttling`` and
``chat.pipeline`` (the chat API's modules), so the consumer and the page apply exactly
the rules and messages of ``POST /api/chat/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, get_args

from channels.db import database_sync_to_async
from ninja import Schema
from pydantic import ValidationError

from chat.auth import ANONYMOUS_SESSION_KEY
from chat.exceptions import ChatRefused, ConversationNotFound
from chat.pipeline import chat_reply
from chat.schemas import MAX_MESSAGE_CHARS, ChatIn, Domain
from chat.throttling import chat_throttles, throttles_count
from chat.ws_auth import AUTH_SESSION, AUTH_TOKEN
from grace.api import validation_details
from grace.auth import Owner
from grace.request_id import request_id_get


def chat_max_chars() -> int:
    return MAX_MESSAGE_CHARS


def chat_domains() -> list[str]:
    return [str(value) for value in get_args(Domain)]


def chat_input_validate(
    content: dict[str, Any], *, schema: type[Schema] = ChatIn
) -> tuple[Any, list[dict[str, Any]]]:
    """Validate a ``message`` frame with the REST schema (another frame with its
    ``schema``): ``(ChatIn, [])`` or ``(None, details)`` with the details the API's 422
    body would carry."""
    fields = {key: value for key, value in content.items() if key != "type"}
    try:
        return schema.model_validate(fields), []
    except ValidationError as exc:
        # As ninja reports them for POST /api/chat/: no input echoed, ctx as text.
        errors = [dict(error) for error in exc.errors(include_url=False, include_input=False)]
        for error in errors:
            ctx = error.get("ctx")
            if isinstance(ctx, dict) and isinstance(ctx.get("error"), Exception):
                error["ctx"] = {**ctx, "error": str(ctx["error"])}
        return None, validation_details(errors)


def chat_validation_messages() -> dict[str, str]:
    """The API's own messages for an empty, a blank and an over-long message."""
    samples = {"empty": "", "blank": "   ", "too_long": "x" * (chat_max_chars() + 1)}
    messages = {}
    for kind, sample in samples.items():
        _, details = chat_input_validate({"message": sample})
        found = next((d for d in details if d.get("field") == "message"), None)
        messages[kind] = str(found["message"]) if found else "This message is not valid."
    return messages


class ReplyRefused(Exception):
    """The chat API refused to answer a message: the ``error`` frame's status, code and details."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error: str | None = None,
        details: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error = error
        self.details = details or []


async def ws_owner_resolve(scope: dict[str, Any]) -> Owner:
    """The ``chat.auth.Owner`` of an (authorised) connection, as the REST API sees it.

    An anonymous caller is their session; one without a session cookie (a program)
    gets a new session for the life of the connection."""
    user = scope.get("user")
    if scope.get("grace_auth") in (AUTH_TOKEN, AUTH_SESSION) and user is not None:
        return Owner(user_id=user.pk, via=str(scope["grace_auth"]))
    session = scope["session"]

    def ensure_session() -> str:
        if not session.get(ANONYMOUS_SESSION_KEY):
            session[ANONYMOUS_SESSION_KEY] = True
            session.save()
        if session.session_key is None:
            session.save()
        return str(session.session_key)

    return Owner(session_key=await database_sync_to_async(ensure_session)(), via="anonymous")


async def ws_throttle_check(*, owner: Owner, scope: dict[str, Any]) -> None:
    """Apply the REST API's throttles to each websocket message (one request each); the
    counts are awaited, never blocking the event loop."""
    client = scope.get("client") or ("", 0)
    request = SimpleNamespace(auth=owner, META={"REMOTE_ADDR": client[0] or "unknown"})
    throttles = chat_throttles()
    await throttles_count(request, throttles)
    for throttle in throttles:
        if not throttle.allow_request(request):  # type: ignore[arg-type]
            wait = max(1, int(throttle.wait() or 1))
            raise ReplyRefused(
                f"Too many requests; try again in {wait} seconds.",
                status=429,
                details=[{"retry_after": wait}],
            )


async def ws_reply(
    *,
    data: ChatIn,
    owner: Owner,
    on_start: Callable[[str | None], Awaitable[None]],
    on_token: Callable[[str], Awaitable[None]],
    stop: asyncio.Event,
) -> dict[str, Any]:
    """Answer one message frame with ``chat.pipeline.chat_reply``; return the REST 200 body.

    ``on_start`` gets the conversation ID (None when the message starts a new one);
    setting ``stop`` ends generation and returns the partial reply, stored, with the
    flag ``stopped``; cancelling the coroutine stores the partial reply and re-raises.
    """
    await on_start(str(data.conversation_id) if data.conversation_id else None)
    try:
        return await chat_reply(
            message=data.message,
            owner=owner,
            domain=data.domain,
            conversation_id=data.conversation_id,
            request_id=request_id_get(),
            on_token=on_token,
            stop=stop,
        )
    except ConversationNotFound as exc:
        # The same 422 as POST /api/chat/ (chat/api.py).
        raise ReplyRefused(
            exc.MESSAGE, status=422, error="validation_error", details=exc.details()
        ) from None
    except ChatRefused as exc:
        # The same 503 as POST /api/chat/ (chat.api.on_chat_refused).
        raise ReplyRefused(
            exc.message, status=503, error=exc.error, details=[{"retry_after": exc.retry_after}]
        ) from None
