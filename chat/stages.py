"""The database work of the pipeline's recall and followup stages (the store stage's is
in ``chat.store``). Each ``*_run`` function here is synchronous and runs in a stage thread
of its own (see ``chat.stagerun``); none of them touches the event loop or changes the
turn (the pipeline applies what they return with the matching ``*_apply``, on the loop).

The hot statements (the ownership check, the history) are plain SQL, in
``chat.statements``.

The follow-up tasks normally go in with the store's transaction (``chat.store``); when
the store does not commit at all, the followup stage enqueues them itself
(``followup_run``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import transaction

from chat.backends.base import KnowledgeHit
from chat.conf import chat_settings
from chat.exceptions import ConversationNotFound, StageAbandoned
from chat.knowledge import knowledge_search
from chat.models import Message
from chat.stagerun import write_serialized
from chat.statements import conversation_owned, recent_transcript
from chat.tasks import causal_track, learning_capture
from chat.turn import Turn
from grace.features import feature_enabled

logger = logging.getLogger(__name__)


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


def followup_run(turn: Turn, cancel: threading.Event) -> None:
    """Enqueue learning capture and causal tracking, together (one transaction for
    both with a database-backed queue); the tasks do the work. The followup stage's own
    work only when the store's transaction did not carry them (see ``store_run``)."""
    if cancel.is_set():
        raise StageAbandoned("followup abandoned before it began")
    with write_serialized(), transaction.atomic():
        followups_enqueue(turn, stored=turn.stored)
        if cancel.is_set():
            raise StageAbandoned("followup abandoned before commit")


def followups_enqueue(turn: Turn, *, stored: bool) -> None:
    """Both follow-ups with one statement where the backend can (``enqueue_many``: the
    executor's; one room check, one lock), else one after the other."""
    calls = followup_calls(turn, stored=stored)
    together = followups_backend_method(calls, "enqueue_many")
    if together is not None and len(calls) > 1:
        together([(task, (), kwargs) for task, kwargs in calls])
        return
    for task, kwargs in calls:
        task.enqueue(**kwargs)


def followups_backend_method(calls: list[tuple[Any, dict[str, Any]]], name: str) -> Any:
    """The method ``name`` of the one task backend all of ``calls`` use (the executor's
    ``enqueue_many``, say: not part of the Tasks API), or None (no calls, several
    backends, a backend without it)."""
    if not calls:
        return None
    backend = calls[0][0].get_backend()
    if any(task.backend != backend.alias for task, _ in calls):
        return None
    return getattr(backend, name, None)


def followup_calls(turn: Turn, *, stored: bool) -> list[tuple[Any, dict[str, Any]]]:
    """The follow-up tasks of the turn and their arguments (none switched off by
    ``GRACE_DISABLED_FEATURES``)."""
    result = turn.result
    calls: list[tuple[Any, dict[str, Any]]] = []
    if not turn.blocked and feature_enabled("learning"):
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
    return calls


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
