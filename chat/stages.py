"""The database work of the pipeline's stages. Each function here is synchronous and
runs in a stage thread of its own (see ``chat.stagerun``); none of them touches the
event loop. ``Turn`` is the state one exchange carries from stage to stage."""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from grace.auth import Owner
from chat.backends.base import KnowledgeHit, ReplyResult
from chat.conf import chat_settings
from chat.security import Inspection, hunter_inspect, security_events_record
from chat.stagerun import StageVerdict, write_serialized

logger = logging.getLogger(__name__)

BLOCKED_PLACEHOLDER = "[message blocked by a security rule]"
TITLE_CHARS = 80


class StageAbandoned(Exception):
    """The pipeline gave up on this stage (timed out) before it committed anything."""


class ConversationNotFound(StageVerdict):
    """The conversation does not exist or belongs to someone else (never say which).

    REST, SSE and the websocket all answer it with the same 422 body: ``MESSAGE`` and
    ``details()``.
    """

    MESSAGE = "The request did not validate; see details."

    def details(self) -> list[dict[str, str]]:
        return [
            {
                "field": "conversation_id",
                "problem": "not_found",
                "message": "No conversation of yours has this ID.",
                "input": str(self),
            }
        ]


@dataclass
class Turn:
    """One exchange: the message, what each stage found, and what goes back."""

    owner: Owner
    message: str
    domain: str
    request_id: str
    conversation_id: uuid.UUID
    new_conversation: bool
    received: datetime = field(default_factory=timezone.now)
    user_message_id: uuid.UUID = field(default_factory=uuid.uuid4)
    reply_id: uuid.UUID = field(default_factory=uuid.uuid4)
    text: str = ""
    """The message as stored and sent to a model: redacted by Hunter when needed."""
    inspection: Inspection | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    knowledge: list[KnowledgeHit] = field(default_factory=list)
    result: ReplyResult | None = None
    stages: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    stored: bool = False
    verified: bool = False
    """Whether the owner's right to ``conversation_id`` was checked (new ones need none)."""

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)

    @property
    def blocked(self) -> bool:
        return self.inspection is not None and self.inspection.blocked


def conversation_owned(*, owner: Owner, conversation_id: uuid.UUID) -> bool:
    from chat.models import Conversation

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


def inspect_run(turn: Turn, cancel: threading.Event) -> Inspection:
    """Check the conversation, then Hunter over the message; one ``SecurityEvent`` per
    matching rule."""
    conversation_verify(turn)
    inspection = hunter_inspect(text=turn.message)
    if inspection.matches:
        try:
            with write_serialized():
                security_events_record(
                    inspection=inspection,
                    request_id=turn.request_id,
                    user_id=turn.owner.user_id,
                    session_key=turn.owner.session_key,
                    conversation_id=turn.conversation_id,
                )
        except Exception:
            # The verdict stands even when the event cannot be written.
            logger.exception("could not record security events")
    return inspection


def recall_run(
    turn: Turn, cancel: threading.Event
) -> tuple[list[dict[str, str]], list[KnowledgeHit]]:
    """The conversation's recent messages (oldest first) and the best knowledge hits."""
    from chat.knowledge import knowledge_search
    from chat.models import Message

    conversation_verify(turn)
    history: list[dict[str, str]] = []
    limit = chat_settings.HISTORY_MESSAGES
    if not turn.new_conversation and limit > 0:
        rows = (
            Message.objects.filter(conversation_id=turn.conversation_id)
            .order_by("-created", "-id")
            .values_list("role", "content")[:limit]
        )
        history = [{"role": role, "content": content} for role, content in reversed(rows)]
    knowledge = knowledge_search(
        text=turn.text, domain=turn.domain, limit=chat_settings.KNOWLEDGE_RESULTS
    )
    return history, knowledge


def _assistant_metadata(turn: Turn) -> dict[str, Any]:
    result = turn.result
    return {
        "backend": result.backend if result else "",
        "model": result.model if result else "",
        "finish_reason": result.finish_reason if result else "",
        "flags": list(turn.flags),
        "stages": dict(turn.stages),
        "domain": turn.domain,
    }


def store_run(turn: Turn, cancel: threading.Event) -> None:
    """The user message and the reply in one transaction (and a ``KnowledgeGap`` for an
    unanswered question). Nothing is committed once the pipeline has given up."""
    from chat.models import Conversation, KnowledgeGap, Message

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
                raise LookupError("the conversation was deleted during the exchange")
        Message.objects.bulk_create(
            [
                Message(
                    id=turn.user_message_id, conversation_id=turn.conversation_id,
                    role="user", content=user_text, request_id=turn.request_id,
                    created=turn.received,
                ),
                Message(
                    id=turn.reply_id, conversation_id=turn.conversation_id,
                    role="assistant", content=reply, request_id=turn.request_id,
                    metadata=_assistant_metadata(turn), created=max(now, turn.received),
                ),
            ]
        )
        if turn.result is not None and turn.result.extra.get("unanswered"):
            knowledge_gap_record(
                question=turn.text, domain=turn.domain, request_id=turn.request_id,
                model=KnowledgeGap,
            )
        if cancel.is_set():
            raise StageAbandoned("store abandoned before commit")
    turn.stored = True


def knowledge_gap_record(*, question: str, domain: str, request_id: str, model: Any) -> None:
    normalized = " ".join(question.lower().split())
    digest = hashlib.sha256(normalized.encode()).hexdigest()
    updated = model.objects.filter(question_hash=digest).update(
        times_asked=F("times_asked") + 1, last_asked=timezone.now(),
        last_request_id=request_id, resolved=False,
    )
    if not updated:
        model.objects.create(
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
    from chat.tasks import causal_track, learning_capture
    from grace.features import feature_enabled

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
    from chat.outcome import is_degraded

    return "degraded" if is_degraded(turn.flags) else "answered"
