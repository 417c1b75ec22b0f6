"""Follow-up tasks, enqueued by the pipeline's followup stage through the Django Tasks
API (``TASKS`` chooses the backend). Arguments are plain JSON values: a task never
relies on the request that enqueued it still being around."""

from __future__ import annotations

import uuid
from typing import Any

from django_tasks import task

from chat.learning import learning_redact
from chat.models import CausalEvent, LearningRecord


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


@task(priority=-10)
def learning_capture(
    *,
    message_id: str | None,
    conversation_id: str | None,
    domain: str,
    text: str,
    reply: str,
    flagged: bool,
    request_id: str,
) -> dict[str, Any]:
    """Store a ``LearningRecord``: a message and its reply with personal data and
    secrets redacted, classified green/yellow/red."""
    question = learning_redact(text)
    answer = learning_redact(reply)
    redactions = dict(question.redactions + answer.redactions)
    sensitivity = question.sensitivity(flagged=flagged)
    if answer.sensitivity() == "red":
        sensitivity = "red"
    record = LearningRecord.objects.create(
        message_id=_uuid(message_id),
        conversation_id=_uuid(conversation_id),
        domain=domain,
        text=question.text,
        reply=answer.text,
        sensitivity=sensitivity,
        redactions=redactions,
        request_id=request_id[:64],
    )
    return {"id": record.pk, "sensitivity": sensitivity}


@task(priority=-20)
def causal_track(
    *,
    cause_message_id: str | None,
    effect_message_id: str | None,
    conversation_id: str | None,
    event_type: str,
    outcome: str,
    flags: list[str],
    request_id: str,
) -> dict[str, Any]:
    """Store a ``CausalEvent`` linking a message to its reply."""
    event = CausalEvent.objects.create(
        cause_message_id=_uuid(cause_message_id),
        effect_message_id=_uuid(effect_message_id),
        conversation_id=_uuid(conversation_id),
        event_type=event_type[:32],
        outcome=outcome[:32],
        flags=list(flags),
        request_id=request_id[:64],
    )
    return {"id": event.pk}
