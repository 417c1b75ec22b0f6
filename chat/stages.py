"""The database work of the pipeline's stages. Each ``*_run`` function here is
synchronous and runs in a stage thread of its own (see ``chat.stagerun``); none of them
touches the event loop or changes the turn (the pipeline applies what they return with
the matching ``*_apply``, on the loop).

The hot statements (the ownership check, the history, the inserts, the knowledge-gap
upsert) are plain SQL, in ``chat.statements``.

One write transaction per exchange: the store stage writes the message, the reply (and a
``KnowledgeGap``) and enqueues the follow-up tasks in the same transaction, on the same
connection, through the Tasks API (``store_run`` with ``with_followups``). When the
enqueue fails, that transaction is rolled back and the exchange is stored alone (the
followup reports ``error``): a follow-up never costs the message. When the store does not
commit at all, the followup stage enqueues the tasks itself (``followup_run``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import transaction
from django.utils import timezone

from chat.backends.base import KnowledgeHit
from chat.backends.grounding import sources_of
from chat.conf import chat_settings
from chat.exceptions import ConversationNotFound, StageAbandoned
from chat.knowledge import knowledge_search
from chat.models import Conversation, Message
from chat.stagerun import StageCancel, write_serialized
from chat.statements import (
    conversation_owned,
    conversation_touch,
    knowledge_gap_record,
    recent_transcript,
    rows_insert,
)
from chat.tasks import causal_track, learning_capture
from chat.turn import Turn
from grace.features import feature_enabled

logger = logging.getLogger(__name__)

BLOCKED_PLACEHOLDER = "[message blocked by a security rule]"
TITLE_CHARS = 80


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
    history: list[dict[str, str]] = []
    limit = chat_settings.HISTORY_MESSAGES
    if turn.new_conversation or limit <= 0:
        conversation_verify(turn)
    elif turn.regenerate_of is None:  # the owner checked and the history read at once
        owner = None if turn.verified else turn.owner
        rows = recent_transcript(turn.conversation_id, limit, owner=owner)
        if rows is None:
            raise ConversationNotFound(str(turn.conversation_id))
        turn.verified = True
        history = [{"role": role, "content": content} for role, content in reversed(rows)]
    else:  # what was said before the message answered again
        conversation_verify(turn)
        shown = Message.objects.filter(conversation_id=turn.conversation_id).before(
            Message.objects.get(pk=turn.regenerate_of)
        )
        rows = list(shown.transcript(newest_first=True).values_list("role", "content")[:limit])
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


WITH_FOLLOWUPS = "the exchange and its follow-up tasks"


class _FollowupsFailed(Exception):
    """Rolls the store's transaction back when the follow-ups could not be enqueued."""


def store_run(turn: Turn, with_followups: bool, cancel: StageCancel) -> str | None:
    """The user message and the reply in one transaction (and a ``KnowledgeGap`` for an
    unanswered question); with ``with_followups``, the follow-up tasks too. Nothing is
    committed once the pipeline has given up.

    Returns the followup's status when the follow-ups were part of this (``ok``: they are
    committed with the exchange; ``error``: they could not be enqueued, and the exchange
    was stored alone), else None (the followup stage enqueues them itself)."""
    if cancel.is_set():
        raise StageAbandoned("store abandoned before it began")
    followup: str | None = None
    with write_serialized():
        if with_followups:
            try:
                with transaction.atomic():
                    _store_rows(turn)
                    _gap_store(turn)
                    try:  # last: the queue's lock (PostgreSQL) is held until the commit
                        _enqueue_followups(turn, stored=True)
                    except Exception as exc:
                        raise _FollowupsFailed(exc) from exc
                    cancel.commit_point(WITH_FOLLOWUPS)
                followup = "ok"
            except _FollowupsFailed as failed:
                cause = failed.__cause__
                logger.warning(
                    "follow-up tasks of request %s not enqueued (%s: %s); the exchange is "
                    "stored without them", turn.request_id, type(cause).__name__, cause,
                )
                followup = "error"
        if followup != "ok":
            with transaction.atomic():
                _store_rows(turn)
                _gap_store(turn)
                cancel.commit_point("store")
    turn.stored = True
    return followup


def _store_rows(turn: Turn) -> None:
    now = timezone.now()
    user_text = BLOCKED_PLACEHOLDER if turn.blocked else turn.text
    reply = turn.result.text if turn.result else ""
    if turn.new_conversation:
        rows_insert([Conversation(
            id=turn.conversation_id,
            user_id=turn.owner.user_id,
            session_key="" if turn.owner.user_id else turn.owner.session_key,
            title=user_text[:TITLE_CHARS],
            domain=turn.domain,
            created=turn.received,
            updated=now,
        )])
    elif not conversation_touch(
        owner=turn.owner, conversation_id=turn.conversation_id, now=now
    ):
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
        rows_insert([question, answer])
    else:
        alternative_store(turn, answer)


def _gap_store(turn: Turn) -> None:
    if turn.result is not None and turn.result.extra.get("unanswered"):
        knowledge_gap_record(
            question=turn.text, domain=turn.domain, request_id=turn.request_id
        )


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


def followup_run(turn: Turn, cancel: threading.Event) -> None:
    """Enqueue learning capture and causal tracking, together (one transaction for
    both with a database-backed queue); the tasks do the work. The followup stage's own
    work only when the store's transaction did not carry them (see ``store_run``)."""
    if cancel.is_set():
        raise StageAbandoned("followup abandoned before it began")
    with write_serialized(), transaction.atomic():
        _enqueue_followups(turn, stored=turn.stored)
        if cancel.is_set():
            raise StageAbandoned("followup abandoned before commit")


def _enqueue_followups(turn: Turn, *, stored: bool) -> None:
    """Both follow-ups with one statement where the backend can (``enqueue_many``: the
    executor's; one room check, one lock), else one after the other."""
    result = turn.result
    calls: list[tuple[Any, dict[str, Any]]] = []
    if not turn.blocked and feature_enabled("learning"):  # GRACE_DISABLED_FEATURES
        calls.append((learning_capture, {
            "message_id": str(turn.user_message_id),
            "conversation_id": str(turn.conversation_id),
            "domain": turn.domain,
            "text": turn.text,
            "reply": result.text if result else "",
            "flagged": bool(turn.inspection and turn.inspection.matches),
            "request_id": turn.request_id,
        }))
    if feature_enabled("causal"):
        calls.append((causal_track, {
            "cause_message_id": str(turn.user_message_id),
            "effect_message_id": str(turn.reply_id),
            "conversation_id": str(turn.conversation_id),
            "event_type": causal_event_type(turn),
            "outcome": causal_outcome(turn, stored=stored),
            "flags": list(turn.flags),
            "request_id": turn.request_id,
        }))
    if not calls:
        return
    backend = calls[0][0].get_backend()
    together = getattr(backend, "enqueue_many", None)
    if together is not None and len(calls) > 1 and all(
        task.backend == backend.alias for task, _ in calls
    ):
        together([(task, (), kwargs) for task, kwargs in calls])
        return
    for task, kwargs in calls:
        task.enqueue(**kwargs)


def causal_event_type(turn: Turn) -> str:
    if turn.blocked:
        return "refusal"
    intent = turn.result.extra.get("intent") if turn.result else None
    return f"fallback_{intent}" if intent else "model_reply"


def causal_outcome(turn: Turn, *, stored: bool) -> str:
    if turn.blocked:
        return "blocked"
    if "stopped" in turn.flags:
        return "stopped"
    if not stored:
        return "not_stored"
    if turn.result is not None and turn.result.extra.get("unanswered"):
        return "unanswered"
    return "degraded" if turn.degraded else "answered"
