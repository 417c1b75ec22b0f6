"""The chat REST API, mounted at ``/api/chat/``: thin views over ``chat.pipeline`` and
the conversation queries. Every error goes through the one error body (grace/api.py)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router
from ninja.responses import Status

from chat.auth import chat_auth
from chat.exceptions import ConversationNotFound, MessageNotFound, NotRegenerable
from chat.models import Conversation, Message
from chat.pipeline import chat_reply
from chat.regenerate import reply_regenerate
from chat.schemas import (
    ChatIn,
    ChatOut,
    ConversationDetail,
    ConversationPage,
    MessagePageQuery,
    PageQuery,
    RegenerateIn,
)
from chat.throttling import chat_throttles, router_count_async
from grace.api import ApiError, errors
from grace.auth import Owner
from grace.errors import error_response
from grace.request_id import request_id_get

router = Router(tags=["chat"], auth=chat_auth(), throttle=chat_throttles())

NOT_FOUND = "No conversation with this ID."
# The transcript's messages: replies replaced by Regenerate are not counted.
SHOWN = Count("messages", filter=Q(messages__superseded=False))


def _owner(request: HttpRequest) -> Owner:
    owner: Owner = request.auth  # type: ignore[attr-defined]
    return owner


# OpenAPI links of a reply (its 200): where its IDs lead, for clients and schemathesis's
# stateful phase (post, read back, answer again, delete, then find it gone).
_REPLY_IDS = {"conversation_id": "$response.body#/conversation_id"}
REPLY_LINKS = {
    200: {
        "links": {
            "conversation": {"operationId": "conversation_get", "parameters": _REPLY_IDS},
            "delete": {"operationId": "conversation_delete", "parameters": _REPLY_IDS},
            "regenerate": {
                "operationId": "message_regenerate",
                "parameters": {**_REPLY_IDS, "message_id": "$response.body#/message_id"},
            },
        }
    }
}


@router.post(
    "/",
    response={200: ChatOut, **errors(401, 403, 415, 422, 429, 503)},
    openapi_extra={"responses": REPLY_LINKS},
    summary="Send a message; get Grace's reply",
    description="422 for invalid input (one detail per problem; unknown fields are "
    "rejected; a `conversation_id` that is not one of yours, too). 200 even when parts of "
    "the pipeline failed: then `degraded` is true and `metadata.flags` says what happened. "
    "503 with `Retry-After` when Grace will not answer now (`error`: `busy`, "
    "`masking_failed`, `inspection_failed`); nothing of the message was stored then.",
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
        status=503,
        error=exc.error,
        message=exc.message,
        details=[{"retry_after": exc.retry_after}],
        headers={"Retry-After": str(exc.retry_after)},
    )


@router.get(
    "/conversations",
    response={200: ConversationPage, **errors(401, 422, 429, 503)},
    summary="Your conversations, newest first",
)
async def conversation_list(request: HttpRequest, page: Query[PageQuery]) -> dict[str, Any]:
    mine = Conversation.objects.owned_by(_owner(request))
    count = await mine.acount()
    rows = mine.annotate(message_count=SHOWN).order_by("-updated", "-id")[
        page.offset : page.offset + page.limit
    ]
    items = [row async for row in rows]
    return {"items": items, "count": count, "limit": page.limit, "offset": page.offset}


async def _get_owned(request: HttpRequest, conversation_id: UUID) -> Conversation:
    conversation = (
        await Conversation.objects.owned_by(_owner(request))
        .annotate(message_count=SHOWN)
        .filter(pk=conversation_id)
        .afirst()
    )
    if conversation is None:
        raise ApiError(NOT_FOUND, status=404)
    return conversation


@router.get(
    "/conversations/{conversation_id}",
    response={200: ConversationDetail, **errors(401, 404, 422, 429, 503)},
    summary="One of your conversations with its messages, oldest first",
    description="Each user message is followed by its current reply; a reply that was "
    "regenerated lists the replies it replaced in `alternatives` (oldest first) and "
    "`message_count` counts neither them nor their pages.",
)
async def conversation_get(
    request: HttpRequest, conversation_id: UUID, page: Query[MessagePageQuery]
) -> dict[str, Any]:
    conversation = await _get_owned(request, conversation_id)
    shown = Message.objects.filter(conversation=conversation).transcript()
    messages = [m async for m in shown[page.offset : page.offset + page.limit]]
    replaced: dict[UUID, list[Message]] = {}
    answered = [m.reply_to_id for m in messages if m.reply_to_id is not None]
    older = Message.objects.filter(reply_to_id__in=answered, superseded=True)
    async for old in older.order_by("created", "id"):
        replaced.setdefault(old.reply_to_id, []).append(old)  # type: ignore[arg-type]
    for message in messages:
        message.alternatives = replaced.get(message.reply_to_id, [])  # type: ignore[arg-type,attr-defined]
    return {
        "id": conversation.pk,
        "title": conversation.title,
        "domain": conversation.domain,
        "created": conversation.created,
        "updated": conversation.updated,
        "message_count": conversation.message_count,  # type: ignore[attr-defined]
        "messages": messages,
        "limit": page.limit,
        "offset": page.offset,
    }


@router.delete(
    "/conversations/{conversation_id}",
    response={204: None, **errors(401, 403, 404, 422, 429, 503)},
    summary="Delete one of your conversations and its messages",
)
async def conversation_delete(request: HttpRequest, conversation_id: UUID) -> Status[None]:
    deleted, _ = await (
        Conversation.objects.owned_by(_owner(request)).filter(pk=conversation_id).adelete()
    )
    if not deleted:
        raise ApiError(NOT_FOUND, status=404)
    return Status(204, None)


@router.post(
    "/conversations/{conversation_id}/messages/{message_id}/regenerate",
    response={200: ChatOut, **errors(401, 403, 404, 415, 422, 429, 503)},
    openapi_extra={"responses": REPLY_LINKS},
    summary="Answer a message again; its earlier replies are kept as alternatives",
    description="`message_id`: a user message of the conversation, or one of its replies. "
    "The message (its stored text, secrets masked) goes through the whole pipeline again, "
    "security inspection included; the new reply becomes the message's current reply and "
    "the earlier ones its `alternatives` (see the conversation). The body is optional "
    "(`domain`: default, the reply's own). 200: the body of `POST /api/chat/`, "
    "`message_id` the new reply's ID. 404 for a message or conversation that is not yours; "
    "422 for a message that cannot be answered again (blocked by a security rule).",
)
async def message_regenerate(
    request: HttpRequest,
    conversation_id: UUID,
    message_id: UUID,
    payload: RegenerateIn | None = None,
) -> dict[str, Any]:
    try:
        return await reply_regenerate(
            owner=_owner(request),
            message_id=message_id,
            conversation_id=conversation_id,
            domain=payload.domain if payload is not None else None,
            request_id=request_id_get(),
        )
    except MessageNotFound:
        raise ApiError(MessageNotFound.MESSAGE, status=404) from None
    except NotRegenerable as exc:
        raise ApiError(
            "The request did not validate; see details.",
            status=422,
            error="validation_error",
            details=exc.details(),
        ) from None


# The throttle counts are awaited (the event loop serves other requests meanwhile).
router_count_async(router)
