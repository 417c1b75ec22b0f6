"""The store stage: the turn's message and reply (a ``KnowledgeGap`` for an unanswered
question, a new conversation or the existing one's touch) and the follow-up tasks, in one
write transaction. ``store_run`` is synchronous and runs in a stage thread of its own
(see ``chat.stagerun``).

One write transaction per exchange: with ``with_followups`` the follow-up tasks are
enqueued in the same transaction, on the same connection, through the Tasks API. When the
enqueue fails, the exchange is stored alone (the followup reports ``error``): a follow-up
never costs the message. When the store does not commit at all, the followup stage
enqueues the tasks itself (``chat.stages.followup_run``).

On PostgreSQL the transaction is sent at once (``_store_batched``: one round trip); a
regeneration, elsewhere, goes statement by statement through Django's transaction
(``_store_transaction``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from chat.backends.grounding import sources_of
from chat.exceptions import StageAbandoned
from chat.models import Conversation, Message
from chat.stagerun import StageCancel, write_serialized
from chat.stages import followup_calls, followups_backend_method, followups_enqueue
from chat.statements import (
    Statement,
    commit_refused,
    conversation_touch,
    conversation_touch_statement,
    knowledge_gap_record,
    knowledge_gap_statement,
    rows_insert,
    rows_insert_statement,
    statements_batch_supported,
    statements_commit,
)
from chat.turn import Turn

logger = logging.getLogger(__name__)

BLOCKED_PLACEHOLDER = "[message blocked by a security rule]"
TITLE_CHARS = 80


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
    try:
        followup = _store_batched(turn, with_followups, cancel)
        if followup == NOT_BATCHED:
            followup = _store_transaction(turn, with_followups, cancel)
    except DatabaseError as exc:
        if commit_refused(exc):  # nothing is in: the followup stage enqueues the tasks
            cancel.commit_refused()
        raise
    turn.stored = True
    return followup


def _store_transaction(turn: Turn, with_followups: bool, cancel: StageCancel) -> str | None:
    """``store_run`` through Django's transaction, statement by statement."""
    followup: str | None = None
    with write_serialized():
        if with_followups:
            try:
                with transaction.atomic():
                    _store_rows(turn)
                    _gap_store(turn)
                    try:  # last: the queue's lock (PostgreSQL) is held until the commit
                        followups_enqueue(turn, stored=True)
                    except Exception as exc:
                        raise _FollowupsFailed(exc) from exc
                    cancel.commit_point(WITH_FOLLOWUPS)
                followup = "ok"
            except _FollowupsFailed as failed:
                _followups_failed(turn, failed.__cause__)
                followup = "error"
        if followup != "ok":
            with transaction.atomic():
                _store_rows(turn)
                _gap_store(turn)
                cancel.commit_point("store")
    return followup


def _followups_failed(turn: Turn, cause: BaseException | None) -> None:
    logger.warning(
        "follow-up tasks of request %s not enqueued (%s: %s); the exchange is stored "
        "without them", turn.request_id, type(cause).__name__, cause,
    )


NOT_BATCHED = "not batched"


def _store_batched(turn: Turn, with_followups: bool, cancel: StageCancel) -> str | None:
    """``store_run``'s transaction sent to the database at once, where it can be
    (``statements_commit``: PostgreSQL): the conversation's touch (or insert), the two
    messages, the ``KnowledgeGap`` and, with ``with_followups``, the follow-up tasks'
    bounded insert (``enqueue_many_statement``), in one round trip instead of six, the
    queue's lock held only inside the database. A full queue writes no task and the rest
    commits: the exchange stored without its follow-ups, as in ``store_run``.

    The owner was checked earlier in the turn (``turn.verified``; owners never change),
    and a conversation deleted meanwhile fails the messages' foreign key (checked at
    ``COMMIT`` on PostgreSQL): nothing is stored. ``NOT_BATCHED`` where this cannot be (a
    regeneration, an unchecked owner, a backend without ``enqueue_many_statement``)."""
    if turn.regenerate_of is not None or not (turn.new_conversation or turn.verified):
        return NOT_BATCHED
    if not statements_batch_supported():
        return NOT_BATCHED
    prepared = None
    followup: str | None = None
    if with_followups:
        calls = followup_calls(turn, stored=True)
        followup = "ok"
        if calls:
            prepare = followups_backend_method(calls, "enqueue_many_statement")
            if prepare is None:
                return NOT_BATCHED
            try:
                prepared = prepare([(task, (), kwargs) for task, kwargs in calls])
            except Exception as exc:
                _followups_failed(turn, exc)
                followup = "error"
            else:
                if prepared is None:  # not one statement: enqueued the usual way
                    return NOT_BATCHED
    statements = _store_statements(turn)
    if prepared is not None:
        statements.append((prepared.sql, prepared.params))
    cancel.commit_point(WITH_FOLLOWUPS if followup == "ok" else "store")
    results = statements_commit(statements)
    if prepared is not None:
        try:
            prepared.finish(results[-1])
        except Exception as exc:
            _followups_failed(turn, exc)
            followup = "error"
    return followup


def _store_statements(turn: Turn) -> list[Statement]:
    """``_store_rows`` and ``_gap_store`` as statements (not for a regeneration)."""
    now = timezone.now()
    conversation, question, answer = _store_objects(turn, now)
    statements: list[Statement] = []
    if conversation is not None:
        statements.append(rows_insert_statement([conversation]))
    else:
        touch = conversation_touch_statement(
            owner=turn.owner, conversation_id=turn.conversation_id, now=now)
        if touch is None:
            raise LookupError("the conversation has no owner")
        statements.append(touch)
    statements.append(rows_insert_statement([question, answer]))
    if _gap_wanted(turn):
        statements.append(knowledge_gap_statement(
            question=turn.text, domain=turn.domain, request_id=turn.request_id))
    return statements


def _store_objects(turn: Turn, now: Any) -> tuple[Conversation | None, Message, Message]:
    """The turn's new conversation (None for an existing one), its message and reply."""
    user_text = BLOCKED_PLACEHOLDER if turn.blocked else turn.text
    reply = turn.result.text if turn.result else ""
    conversation = None
    if turn.new_conversation:
        conversation = Conversation(
            id=turn.conversation_id,
            user_id=turn.owner.user_id,
            session_key="" if turn.owner.user_id else turn.owner.session_key,
            title=user_text[:TITLE_CHARS],
            domain=turn.domain,
            created=turn.received,
            updated=now,
        )
    answer = Message(
        id=turn.reply_id, conversation_id=turn.conversation_id,
        role="assistant", content=reply, request_id=turn.request_id,
        metadata=_assistant_metadata(turn), created=max(now, turn.received),
        reply_to_id=turn.user_message_id,
    )
    question = Message(
        id=turn.user_message_id, conversation_id=turn.conversation_id,
        role="user", content=user_text, request_id=turn.request_id,
        created=turn.received,
    )
    return conversation, question, answer


def _store_rows(turn: Turn) -> None:
    now = timezone.now()
    conversation, question, answer = _store_objects(turn, now)
    if conversation is not None:
        rows_insert([conversation])
    elif not conversation_touch(
        owner=turn.owner, conversation_id=turn.conversation_id, now=now
    ):
        raise LookupError("the conversation was deleted during the turn")
    if turn.regenerate_of is None:
        rows_insert([question, answer])
    else:
        alternative_store(turn, answer)


def _gap_wanted(turn: Turn) -> bool:
    return turn.result is not None and bool(turn.result.extra.get("unanswered"))


def _gap_store(turn: Turn) -> None:
    if _gap_wanted(turn):
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
