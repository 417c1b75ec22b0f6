"""The database work of the pipeline's stages. Each ``*_run`` function here is
synchronous and runs in a stage thread of its own (see ``chat.stagerun``); none of them
touches the event loop or changes the turn (the pipeline applies what they return with
the matching ``*_apply``, on the loop).

The reply path's reads (the ownership check, the history) are plain SQL written once per
database vendor: the ORM spent more time building these statements than the database
spent running them (about 0.7 ms against 0.05 ms for the history on SQLite). They say
exactly what ``Conversation.objects.owned_by`` and ``Message.objects.transcript`` say;
the tests compare them.

One write transaction per exchange: the store stage writes the message, the reply (and a
``KnowledgeGap``) and enqueues the follow-up tasks in the same transaction, on the same
connection, through the Tasks API (``store_run`` with ``with_followups``). When the
enqueue fails, that transaction is rolled back and the exchange is stored alone (the
followup reports ``error``): a follow-up never costs the message. When the store does not
commit at all, the followup stage enqueues the tasks itself (``followup_run``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from chat.backends.base import KnowledgeHit
from chat.backends.grounding import sources_of
from chat.conf import chat_settings
from chat.exceptions import ConversationNotFound, StageAbandoned
from chat.knowledge import knowledge_search
from chat.models import Conversation, KnowledgeGap, Message
from chat.stagerun import StageCancel, write_serialized
from chat.tasks import causal_track, learning_capture
from chat.turn import Turn
from grace.auth import Owner
from grace.features import feature_enabled

logger = logging.getLogger(__name__)

BLOCKED_PLACEHOLDER = "[message blocked by a security rule]"
TITLE_CHARS = 80


def _table(model: Any) -> str:
    return str(connections["default"].ops.quote_name(model._meta.db_table))


def _uuid_param(value: uuid.UUID) -> Any:
    """A UUID as the database stores it (a hex string on SQLite, a uuid elsewhere)."""
    return Conversation._meta.pk.get_db_prep_value(value, connections["default"])  # type: ignore[union-attr]


def _owned(owner: Owner, conversation_id: uuid.UUID) -> tuple[str, list[Any]] | None:
    """The ``WHERE`` of ``Conversation.objects.owned_by(owner).filter(pk=...)`` and its
    parameters; None when the owner can own nothing."""
    if owner.user_id is not None:
        return "id = %s AND user_id = %s", [_uuid_param(conversation_id), owner.user_id]
    if owner.session_key:
        return (
            "id = %s AND user_id IS NULL AND session_key = %s",
            [_uuid_param(conversation_id), owner.session_key],
        )
    return None


def conversation_owned(*, owner: Owner, conversation_id: uuid.UUID) -> bool:
    """``Conversation.objects.owned_by(owner).filter(pk=conversation_id).exists()``."""
    owned = _owned(owner, conversation_id)
    if owned is None:
        return False
    where, params = owned
    sql = f"SELECT 1 FROM {_table(Conversation)} WHERE {where} LIMIT 1"  # noqa: S608
    with connections["default"].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def conversation_touch(*, owner: Owner, conversation_id: uuid.UUID, now: Any) -> bool:
    """``owned_by(owner).filter(pk=conversation_id).update(updated=now)``: whether the
    owner's conversation is there (and now updated)."""
    owned = _owned(owner, conversation_id)
    if owned is None:
        return False
    where, params = owned
    connection = connections["default"]
    updated = Conversation._meta.get_field("updated").get_db_prep_save(now, connection)
    sql = f"UPDATE {_table(Conversation)} SET updated = %s WHERE {where}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [updated, *params])
        return cursor.rowcount > 0


def rows_insert(objs: list[Any]) -> None:
    """``bulk_create(objs)`` for models whose every field has its value already (no
    database defaults, no auto fields, no signals): one ``INSERT`` with all the rows."""
    model = type(objs[0])
    connection = connections["default"]
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {_table(model)} ({columns}) VALUES " + ", ".join([row] * len(objs))  # noqa: S608
    params = [
        field.get_db_prep_save(getattr(obj, field.attname), connection)
        for obj in objs
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def recent_transcript(
    conversation_id: uuid.UUID, limit: int, *, owner: Owner | None = None
) -> list[tuple[str, str]] | None:
    """``(role, content)`` of the conversation's last ``limit`` messages, newest first:
    ``Message.objects.filter(conversation_id=...).transcript(newest_first=True)``.

    With ``owner``: in the same statement, only if the conversation is the owner's; None
    when it is not (an owned conversation without messages costs a second statement)."""
    message = _table(Message)
    owned_sql, owned_params = "", []
    if owner is not None:
        owned = _owned(owner, conversation_id)
        if owned is None:
            return None
        owned_sql = f"AND EXISTS (SELECT 1 FROM {_table(Conversation)} WHERE {owned[0]}) "  # noqa: S608
        owned_params = owned[1]
    sql = (
        f"SELECT m.role, m.content FROM {message} m "  # noqa: S608
        f"LEFT OUTER JOIN {message} r ON m.reply_to_id = r.id "
        f"WHERE m.conversation_id = %s AND NOT m.superseded {owned_sql}"
        "ORDER BY COALESCE(r.created, m.created) DESC, "
        "CASE WHEN m.role = %s THEN 0 ELSE 1 END DESC, m.created DESC, m.id DESC LIMIT %s"
    )
    with connections["default"].cursor() as cursor:
        cursor.execute(sql, [_uuid_param(conversation_id), *owned_params, "user", limit])
        rows = [(role, content) for role, content in cursor.fetchall()]
    if owner is not None and not rows and not conversation_owned(
        owner=owner, conversation_id=conversation_id
    ):
        return None
    return rows


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
    if turn.new_conversation or limit <= 0 or turn.regenerate_of is not None:
        conversation_verify(turn)
    if not turn.new_conversation and limit > 0:
        if turn.regenerate_of is None:  # checked and read in one statement
            owner = None if turn.verified else turn.owner
            rows = recent_transcript(turn.conversation_id, limit, owner=owner)
            if rows is None:
                raise ConversationNotFound(str(turn.conversation_id))
            turn.verified = True
        else:  # what was said before the message answered again
            shown = Message.objects.filter(conversation_id=turn.conversation_id).before(
                Message.objects.get(pk=turn.regenerate_of)
            )
            rows = list(
                shown.transcript(newest_first=True).values_list("role", "content")[:limit]
            )
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
                    try:
                        _enqueue_followups(turn, stored=True)
                    except Exception as exc:
                        raise _FollowupsFailed(exc) from exc
                    _gap_store(turn)
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


def knowledge_gap_record(*, question: str, domain: str, request_id: str) -> None:
    """One more time ``question`` was asked and not answered: a new ``KnowledgeGap``, or
    the existing one counted up (and open again). One ``INSERT ... ON CONFLICT`` (SQLite
    3.24+, PostgreSQL): two replies asking a new question at once count twice, where an
    update-then-insert let the second fail on the unique hash (and lose its exchange)."""
    normalized = " ".join(question.lower().split())
    digest = hashlib.sha256(normalized.encode()).hexdigest()
    connection = connections["default"]
    now = KnowledgeGap._meta.get_field("last_asked").get_db_prep_save(
        timezone.now(), connection
    )
    table = _table(KnowledgeGap)
    sql = (
        f"INSERT INTO {table} (question, question_hash, domain, times_asked, first_asked, "  # noqa: S608
        "last_asked, last_request_id, resolved) VALUES (%s, %s, %s, 1, %s, %s, %s, %s) "
        f"ON CONFLICT (question_hash) DO UPDATE SET times_asked = {table}.times_asked + 1, "
        "last_asked = excluded.last_asked, last_request_id = excluded.last_request_id, "
        "resolved = excluded.resolved"
    )
    resolved = KnowledgeGap._meta.get_field("resolved").get_db_prep_save(False, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [question, digest, domain, now, now, request_id[:64], resolved])


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
        outcome=causal_outcome(turn, stored=stored),
        flags=list(turn.flags),
        request_id=turn.request_id,
    )


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
