"""The chat REST API, mounted at ``/api/chat/``: thin views over ``chat.pipeline`` and
the conversation queries. Every error goes through the one error body (grace/api.py)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router
from ninja.responses import Status

from chat.auth import chat_auth
from chat.exceptions import ConversationNotFound
from chat.models import Conversation, Message
from chat.pipeline import chat_reply
from chat.schemas import (
    ChatIn,
    ChatOut,
    ConversationDetail,
    ConversationPage,
    MessagePageQuery,
    PageQuery,
)
from chat.throttling import chat_throttles
from grace.api import ApiError
from grace.auth import Owner
from grace.errors import error_response
from grace.request_id import request_id_get

router = Router(tags=["chat"], auth=chat_auth(), throttle=chat_throttles())

NOT_FOUND = "No conversation with this ID."


def _owner(request: HttpRequest) -> Owner:
    owner: Owner = request.auth  # type: ignore[attr-defined]
    return owner


@router.post(
    "/", response=ChatOut, summary="Send a message; get Grace's reply",
    description="422 for invalid input (one detail per problem; unknown fields are "
    "rejected). 200 even when parts of the pipeline failed: then `degraded` is true and "
    "`metadata.flags` says what happened.",
)
async def chat_post(request: HttpRequest, payload: ChatIn) -> dict[str, Any]:
    try:
        return await chat_reply(
            message=payload.message,
            owner=_owner(request),
            domain=payload.domain,
            conversation_id=payload.conversation_id,
            request_id=request_id_get(),
        )
    except ConversationNotFound as exc:
        raise ApiError(
            exc.MESSAGE,
            status=422,
            error="validation_error",
            details=exc.details(),
        ) from None


def on_chat_refused(request: HttpRequest, exc: Any) -> HttpResponse:
    """A message Grace will not answer now (``chat.exceptions.ChatRefused``): 503 with
    ``Retry-After``; nothing of it was stored."""
    return error_response(
        status=503, error=exc.error, message=exc.message,
        details=[{"retry_after": exc.retry_after}],
        headers={"Retry-After": str(exc.retry_after)},
    )


@router.get("/conversations", response=ConversationPage, summary="Your conversations, newest first")
async def conversation_list(request: HttpRequest, page: Query[PageQuery]) -> dict[str, Any]:
    mine = Conversation.objects.owned_by(_owner(request))
    count = await mine.acount()
    rows = mine.annotate(message_count=Count("messages")).order_by("-updated", "-id")[
        page.offset : page.offset + page.limit
    ]
    items = [row async for row in rows]
    return {"items": items, "count": count, "limit": page.limit, "offset": page.offset}


async def _get_owned(request: HttpRequest, conversation_id: UUID) -> Conversation:
    conversation = (
        await Conversation.objects.owned_by(_owner(request))
        .annotate(message_count=Count("messages"))
        .filter(pk=conversation_id)
        .afirst()
    )
    if conversation is None:
        raise ApiError(NOT_FOUND, status=404)
    return conversation


@router.get(
    "/conversations/{conversation_id}", response=ConversationDetail,
    summary="One of your conversations with its messages, oldest first",
)
async def conversation_get(
    request: HttpRequest, conversation_id: UUID, page: Query[MessagePageQuery]
) -> dict[str, Any]:
    conversation = await _get_owned(request, conversation_id)
    messages = Message.objects.filter(conversation=conversation).order_by("created", "id")[
        page.offset : page.offset + page.limit
    ]
    return {
        "id": conversation.pk,
        "title": conversation.title,
        "domain": conversation.domain,
        "created": conversation.created,
        "updated": conversation.updated,
        "message_count": conversation.message_count,  # type: ignore[attr-defined]
        "messages": [m async for m in messages],
        "limit": page.limit,
        "offset": page.offset,
    }


@router.delete(
    "/conversations/{conversation_id}", response={204: None},
    summary="Delete one of your conversations and its messages",
)
async def conversation_delete(request: HttpRequest, conversation_id: UUID) -> Status[None]:
    deleted, _ = await (
        Conversation.objects.owned_by(_owner(request)).filter(pk=conversation_id).adelete()
    )
    if not deleted:
        raise ApiError(NOT_FOUND, status=404)
    return Status(204, None)
