"""Regenerate: answer a stored user message again, keeping the earlier replies.

The message goes through ``chat.pipeline.chat_reply`` like any other (admission, secret
masking, inspection, recall, respond, store, followup): its stored text (secrets already
masked when it was first sent) is inspected again, recall sees the conversation before
it, and the store stage keeps its earlier replies as alternatives (``superseded``) and
stores the new reply as the current one. REST:
``POST /api/chat/conversations/{conversation_id}/messages/{message_id}/regenerate``;
websocket: ``{"type": "regenerate", "message_id": ...}``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from chat.exceptions import ChatRefused, ConversationNotFound, MessageNotFound, NotRegenerable
from chat.models import Conversation, Message, Role
from chat.pipeline import DOMAINS, chat_reply
from chat.schemas import MAX_MESSAGE_CHARS, RegenerateFrame
from chat.store import BLOCKED_PLACEHOLDER
from chat.turn import TokenCallback
from chat.ws_service import ReplyRefused
from grace.auth import Owner
from grace.request_id import request_id_get

BLOCKED = "This message was blocked by a security rule; it cannot be answered again."
ORPHAN = "This reply was stored without its message; it cannot be answered again."
TOO_LONG = f"This message is longer than {MAX_MESSAGE_CHARS} characters as stored."


async def regenerate_target(
    *, owner: Owner, message_id: uuid.UUID, conversation_id: uuid.UUID | None = None
) -> Message:
    """The user message to answer again: ``message_id`` is that message or one of its
    replies, in one of ``owner``'s conversations (``conversation_id``'s when given).

    Raises ``MessageNotFound`` (another owner's message included) and
    ``NotRegenerable``."""
    mine = Message.objects.filter(conversation__in=Conversation.objects.owned_by(owner))
    if conversation_id is not None:
        mine = mine.filter(conversation_id=conversation_id)
    found = await mine.select_related("reply_to").filter(pk=message_id).afirst()
    if found is None:
        raise MessageNotFound(str(message_id))
    question = found if found.role == Role.USER else found.reply_to
    if question is None:
        raise NotRegenerable(str(message_id), ORPHAN)
    if question.content == BLOCKED_PLACEHOLDER:
        raise NotRegenerable(str(message_id), BLOCKED)
    if not question.content.strip() or len(question.content.strip()) > MAX_MESSAGE_CHARS:
        raise NotRegenerable(str(message_id), TOO_LONG)
    return question


async def _domain_of(question: Message) -> str:
    """The domain the message was answered in: its current reply's, else its
    conversation's."""
    reply = await Message.objects.filter(reply_to=question, superseded=False).afirst()
    domain = reply.metadata.get("domain") if reply is not None else None
    if domain in DOMAINS:
        return str(domain)
    conversation = await Conversation.objects.aget(pk=question.conversation_id)
    return conversation.domain if conversation.domain in DOMAINS else "all"


async def reply_regenerate(
    *,
    owner: Owner,
    message_id: uuid.UUID,
    conversation_id: uuid.UUID | None = None,
    domain: str | None = None,
    request_id: str | None = None,
    on_start: Callable[[str], Awaitable[None]] | None = None,
    on_token: TokenCallback | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Answer the message again; the body of ``POST /api/chat/``'s 200 (the new reply,
    ``message_id`` its ID), the websocket's ``done``.

    ``on_start(conversation_id)`` is awaited once the message is found; ``on_token``
    and ``stop`` as in ``chat_reply``. Raises ``MessageNotFound`` (REST 404),
    ``NotRegenerable`` (422) and ``ChatRefused`` (503)."""
    question = await regenerate_target(
        owner=owner, message_id=message_id, conversation_id=conversation_id
    )
    if on_start is not None:
        await on_start(str(question.conversation_id))
    try:
        return await chat_reply(
            message=question.content,
            owner=owner,
            domain=domain or await _domain_of(question),
            conversation_id=question.conversation_id,
            request_id=request_id,
            on_token=on_token,
            stop=stop,
            regenerate_of=question.pk,
        )
    except ConversationNotFound:  # deleted since it was found
        raise MessageNotFound(str(message_id)) from None


async def ws_regenerate(
    *,
    data: RegenerateFrame,
    owner: Owner,
    on_start: Callable[[str | None], Awaitable[None]],
    on_token: Callable[[str], Awaitable[None]],
    stop: asyncio.Event,
) -> dict[str, Any]:
    """The websocket's ``regenerate`` frame: ``reply_regenerate`` with its refusals as
    the error frames REST's statuses would be."""
    try:
        return await reply_regenerate(
            owner=owner,
            message_id=data.message_id,
            conversation_id=data.conversation_id,
            domain=data.domain,
            request_id=request_id_get(),
            on_start=on_start,
            on_token=on_token,
            stop=stop,
        )
    except MessageNotFound:
        raise ReplyRefused(MessageNotFound.MESSAGE, status=404, error="not_found") from None
    except NotRegenerable as exc:
        raise ReplyRefused(
            "The request did not validate; see details.",
            status=422,
            error="validation_error",
            details=exc.details(),
        ) from None
    except ChatRefused as exc:
        raise ReplyRefused(
            exc.message, status=503, error=exc.error, details=[{"retry_after": exc.retry_after}]
        ) from None
