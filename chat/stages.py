"""The database work of the pipeline's stages. Each ``*_run`` function here is
synchronous and runs in a stage thread of its own (see ``chat.stagerun``); none of them
touches the event loop or changes the turn (the pipeline applies what they return with
the matching ``*_apply``, on the loop)."""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chat.backends.base import KnowledgeHit
from chat.backends.grounding import sources_of
from chat.conf import chat_settings
from chat.exceptions import ConversationNotFound, StageAbandoned
from chat.knowledge import knowledge_search
from chat.models import Conversation, KnowledgeGap, Message
from chat.stagerun import write_serialized
from chat.tasks import causal_track, learning_capture
from chat.turn import Turn
from grace.auth import Owner
from grace.features import feature_enabled

logger = logging.getLogger(__name__)

BLOCKED_PLACEHOLDER = "[message blocked by a security rule]"
TITLE_CHARS = 80


def conversation_owned(*, owner: Owner, conversation_id: uuid.UUID) -> bool:
    return Conversation.objects.owned_by(owner).filter(pk=conversation_id).exists()


def conversation_verify(turn: Turn) -> None:
    """Raise ``ConversationNotFound`` unless the turn's conversation is the owner's.

    The first stage that reaches the database checks (inspect, else recall); the store
    stage only ever writes to a conversation of the owner's in any case.
    """
    if turn.new_conversation or turn.verified:
        return
    if not conversation_owned(owner=turn.owner, conversation_id=turn.conversation_id):
        raise ConversationNotFound(str(turn.conversation_id))
    turn.verified = True


def recall_run(
    turn: Turn, cancel: threading.Event
) -> tuple[list[dict[str, str]], list[KnowledgeHit]]:
    """The conversation's recent messages (oldest first) and the best knowledge hits."""
    conversation_verify(turn)
    history: list[dict[str, str]] = []
    limit = chat_settings.HISTORY_MESSAGES
    if not turn.new_conversation and limit > 0:
        shown = Message.objects.filter(conversation_id=turn.conversation_id)
        if turn.regenerate_of is not None:  # what was said before the message answered again
            shown = shown.before(Message.objects.get(pk=turn.regenerate_of))
        rows = shown.transcript(newest_first=True).values_list("role", "content")[:limit]
        history = [{"role": role, "content": content} for role, content in reversed(rows)]
    knowledge = knowledge_search(
        text=turn.text, domain=turn.domain, limit=chat_settings.KNOWLEDGE_RESULTS
    )
    return history, knowledge


def recall_apply(turn: Turn, recalled: tuple[list[dict[str, str]], list[KnowledgeHit]]) -> str:
    turn.history, turn.knowledge = recalled
    return "ok"


def _assistant_metadata(turn: Turn) -> dict[str, Any]:
    result = turn.result
    return {
        "backend": result.backend if result else "",
        "model": result.model if result else "",
        "finish_reason": result.finish_reason if result else "",
        "flags": list(turn.flags),
        "stages": dict(turn.stages),
        "domain": turn.domain,
        "sources": sources_of(result.sources) if result else [],
    }


def store_run(turn: Turn, cancel: threading.Event) -> None:
    """The user message and the reply in one transaction (and a ``KnowledgeGap`` for an
    unanswered question). Nothing is committed once the pipeline has given up."""
    if cancel.is_set():
        raise StageAbandoned("store abandoned before it began")
    now = timezone.now()
    user_text = BLOCKED_PLACEHOLDER if turn.blocked else turn.text
    reply = turn.result.text if turn.result else ""
    with write_serialized(), transaction.atomic():
        if turn.new_conversation:
            Conversation.objects.create(
                id=turn.conversation_id,
                user_id=turn.owner.user_id,
                session_key="" if turn.owner.user_id else turn.owner.session_key,
                title=user_text[:TITLE_CHARS],
                domain=turn.domain,
                created=turn.received,
                updated=now,
            )
        else:
            updated = (
                Conversation.objects.owned_by(turn.owner)
                .filter(pk=turn.conversation_id)
                .update(updated=now)
            )
            if not updated:
                raise LookupError("the conversation was deleted during the turn")
        answer = Message(
            id=turn.reply_id, conversation_id=turn.conversation_id,
            role="assistant", content=reply, request_id=turn.request_id,
            metadata=_assistant_metadata(turn), created=max(now, turn.received),
            reply_to_id=turn.user_message_id,
        )
        if turn.regenerate_of is None:
            question = Message(
                id=turn.user_message_id, conversation_id=turn.conversation_id,
                role="user", content=user_text, request_id=turn.request_id,
                created=turn.received,
            )
            Message.objects.bulk_create([question, answer])
        else:
            alternative_store(turn, answer)
        if turn.result is not None and turn.result.extra.get("unanswered"):
            knowledge_gap_record(
                question=turn.text, domain=turn.domain, request_id=turn.request_id
            )
        if cancel.is_set():
            raise StageAbandoned("store abandoned before commit")
    turn.stored = True


def alternative_store(turn: Turn, answer: Message) -> None:
    """A regenerated reply: the message's earlier replies stay as alternatives
    (``superseded``), the new one is its current reply. The message's row is locked so
    that two regenerations of it leave one current reply."""
    question = (
        Message.objects.select_for_update()
        .filter(pk=turn.user_message_id, conversation_id=turn.conversation_id, role="user")
        .first()
    )
    if question is None:
        raise LookupError("the message was deleted during the turn")
    Message.objects.filter(reply_to=question, superseded=False).update(superseded=True)
    answer.save(force_insert=True)


def knowledge_gap_record(*, question: str, domain: str, request_id: str) -> None:
    normalized = " ".join(question.lower().split())
    digest = hashlib.sha256(normalized.encode()).hexdigest()
    updated = KnowledgeGap.objects.filter(question_hash=digest).update(
        times_asked=F("times_asked") + 1, last_asked=timezone.now(),
        last_request_id=request_id, resolved=False,
    )
    if not updated:
        KnowledgeGap.objects.create(
            question=question, question_hash=digest, domain=domain, last_request_id=request_id
        )


def followup_run(turn: Turn, cancel: threading.Event) -> None:
    """Enqueue learning capture and causal tracking, together (one transaction for
    both with a database-backed queue); the tasks do the work."""
    if cancel.is_set():
        raise StageAbandoned("followup abandoned before it began")
    with write_serialized(), transaction.atomic():
        _enqueue_followups(turn)
        if cancel.is_set():
            raise StageAbandoned("followup abandoned before commit")


def _enqueue_followups(turn: Turn) -> None:
    result = turn.result
    if not turn.blocked and feature_enabled("learning"):  # GRACE_DISABLED_FEATURES
        learning_capture.enqueue(
            message_id=str(turn.user_message_id),
            conversation_id=str(turn.conversation_id),
            domain=turn.domain,
            text=turn.text,
            reply=result.text if result else "",
            flagged=bool(turn.inspection and turn.inspection.matches),
            request_id=turn.request_id,
        )
    if not feature_enabled("causal"):
        return
    causal_track.enqueue(
        cause_message_id=str(turn.user_message_id),
        effect_message_id=str(turn.reply_id),
        conversation_id=str(turn.conversation_id),
        event_type=causal_event_type(turn),
        outcome=causal_outcome(turn),
        flags=list(turn.flags),
        request_id=turn.request_id,
    )


def causal_event_type(turn: Turn) -> str:
    if turn.blocked:
        return "refusal"
    intent = turn.result.extra.get("intent") if turn.result else None
    return f"fallback_{intent}" if intent else "model_reply"


def causal_outcome(turn: Turn) -> str:
    if turn.blocked:
        return "blocked"
    if "stopped" in turn.flags:
        return "stopped"
    if not turn.stored:
        return "not_stored"
    if turn.result is not None and turn.result.extra.get("unanswered"):
        return "unanswered"
    return "degraded" if turn.degraded else "answered"
