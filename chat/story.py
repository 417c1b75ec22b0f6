"""The chat app's sources of the admin's request page (``grace.request_story``): the
messages, Hunter's security events, learning records and causal events of one request,
and the summary of the reply it got."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from chat.metrics import stage_outcomes
from chat.models import CausalEvent, LearningRecord, Message, SecurityEvent
from chat.turn import is_degraded
from grace.models import AuditEntry
from grace.request_story import (
    START_CHARS,
    Cell,
    Moment,
    StorySource,
    admin_url,
    story_source_register,
)

REPLY_AUDIT_ACTION = "chat.exchange"
MODEL_NOTES = {"timeout": "timed out (llm_timeout)", "error": "failed (llm_error)"}


def _messages(rid: str, limit: int) -> list[Any]:
    return list(
        Message.objects.filter(request_id=rid)
        .select_related("conversation")
        .order_by("created", "id")[:limit]
    )


def _message_moments(message: Any) -> list[Moment]:
    return [
        Moment(
            message.created,
            "message",
            f"{message.role} message in conversation {message.conversation_id}",
            admin_url(message),
        )
    ]


def _message_row(message: Any) -> list[Cell]:
    content = message.content if len(message.content) <= 300 else message.content[:299] + "…"
    return [
        Cell(message.created.strftime("%H:%M:%S.%f"), admin_url(message)),
        Cell(message.role),
        Cell(content),
    ]


def _reply_summary(found: dict[str, list[Any]]) -> dict[str, Any] | None:
    """What the reply said about itself: the ``chat.exchange`` audit entry (all stages,
    written after the reply) or else the stored reply's metadata (stages up to store)."""
    reply = next((m for m in found.get("messages", []) if m.role == "assistant"), None)
    meta: dict[str, Any] = {}
    for entry in found.get("audit", []):
        if getattr(entry, "action", "") == REPLY_AUDIT_ACTION:
            meta = dict(entry.payload or {})
            break
    if not meta and reply is not None:
        meta = dict(reply.metadata or {})
    if not meta:
        return None
    flags = list(meta.get("flags", []))
    stages = dict(meta.get("stages", {}))
    outcomes = stage_outcomes(stages, flags)
    summary: dict[str, Any] = {
        "stages": outcomes,
        "stage_notes": {
            stage: f"the model {MODEL_NOTES[outcomes[stage]]}; metadata.stages says {status}"
            for stage, status in stages.items()
            if outcomes[stage] != status
        },
        "flags": flags,
        "degraded": is_degraded(flags),
        "backend": meta.get("backend", ""),
        "duration_ms": meta.get("duration_ms"),
        "model": (reply.metadata or {}).get("model", "") if reply is not None else "",
        "links": [],
        "note": "",
    }
    if reply is None:
        summary["note"] = "no reply was stored"
    else:
        url = reverse("admin:chat_conversation_change", args=[reply.conversation_id])
        summary["links"] = [("conversation", str(reply.conversation_id), url)]
    return summary


def _describe(rids: list[str]) -> dict[str, dict[str, Any]]:
    """For the list of recent requests: the caller (from the ``chat.exchange`` entry),
    the start of the user's message as stored (masked) and whether the reply degraded;
    a reply whose messages were not stored says so (the audit entry holds no text)."""
    known: dict[str, dict[str, Any]] = {rid: {} for rid in rids}
    for rid, actor, payload in AuditEntry.objects.filter(
        request_id__in=rids, action=REPLY_AUDIT_ACTION
    ).values_list("request_id", "actor", "payload"):
        payload = payload or {}
        known[rid].update(
            who=actor, via=payload.get("via", ""), degraded=bool(payload.get("degraded"))
        )
    for rid, role, content, metadata in (
        Message.objects.filter(request_id__in=rids)
        .order_by("created")
        .values_list("request_id", "role", "content", "metadata")
    ):
        facts = known[rid]
        if role == "user" and "start" not in facts:
            text = " ".join(content.split())
            facts["start"] = text if len(text) <= START_CHARS else text[: START_CHARS - 1] + "…"
        elif role == "assistant" and "degraded" not in facts:
            facts["degraded"] = is_degraded(list((metadata or {}).get("flags", [])))
    for facts in known.values():
        if "who" in facts and "start" not in facts:
            facts["what"] = "chat message (not stored)"
    return {rid: facts for rid, facts in known.items() if facts}


def _security_events(rid: str, limit: int) -> list[Any]:
    return list(SecurityEvent.objects.filter(request_id=rid).order_by("created", "id")[:limit])


def _security_moments(event: Any) -> list[Moment]:
    return [
        Moment(
            event.created,
            "security",
            f"{event.rule_name}: {event.action} ({event.kind}, {event.severity})",
            admin_url(event),
        )
    ]


def _security_row(event: Any) -> list[Cell]:
    return [
        Cell(event.rule_name, admin_url(event)),
        Cell(event.kind),
        Cell(event.action),
        Cell(event.severity),
        Cell(event.excerpt),
    ]


def _learning(rid: str, limit: int) -> list[Any]:
    return list(LearningRecord.objects.filter(request_id=rid).order_by("created")[:limit])


def _learning_moments(record: Any) -> list[Moment]:
    return [
        Moment(record.created, "learning", f"captured ({record.sensitivity})", admin_url(record))
    ]


def _causal(rid: str, limit: int) -> list[Any]:
    return list(CausalEvent.objects.filter(request_id=rid).order_by("created")[:limit])


def _causal_moments(event: Any) -> list[Moment]:
    return [
        Moment(event.created, "causal", f"{event.event_type} -> {event.outcome}", admin_url(event))
    ]


def story_sources_register() -> None:
    story_source_register(
        StorySource(
            name="messages",
            title="Messages",
            read=_messages,
            moments=_message_moments,
            columns=("created", "role", "content"),
            row=_message_row,
            summary=_reply_summary,
            describe=_describe,
            order=10,
        )
    )
    story_source_register(
        StorySource(
            name="security_events",
            title="Security events",
            read=_security_events,
            moments=_security_moments,
            columns=("rule", "kind", "action", "severity", "excerpt"),
            row=_security_row,
            order=20,
        )
    )
    story_source_register(
        StorySource(
            name="learning",
            title="Learning records",
            read=_learning,
            moments=_learning_moments,
            order=60,
        )
    )
    story_source_register(
        StorySource(
            name="causal", title="Causal events", read=_causal, moments=_causal_moments, order=70
        )
    )
