"""Everything recorded about one request ID, for the admin's request page.

Each source is read with its own indexed ``request_id`` lookup (bounded by ``LIMIT``);
a source that cannot be read (a missing table, the metrics database down) is reported
as unavailable instead of failing the page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.urls import NoReverseMatch, reverse

logger = logging.getLogger(__name__)

LIMIT = 200


@dataclass
class Moment:
    """One line of the timeline."""

    time: datetime
    source: str
    text: str
    url: str = ""


@dataclass
class RequestStory:
    request_id: str
    messages: list[Any] = field(default_factory=list)
    reply: Any = None
    security_events: list[Any] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    audit: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    learning: list[Any] = field(default_factory=list)
    causal: list[Any] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    timeline: list[Moment] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return any((self.messages, self.security_events, self.tasks, self.errors, self.audit,
                    self.metrics, self.learning, self.causal))

    @property
    def exchange(self) -> dict[str, Any]:
        """What the reply said about itself: the ``chat.exchange`` audit entry (all stages,
        written after the reply) or else the stored reply's metadata (stages up to store)."""
        for entry in self.audit:
            if entry.action == "chat.exchange":
                return dict(entry.payload or {})
        if self.reply is not None:
            return dict(self.reply.metadata or {})
        return {}

    @property
    def stages(self) -> dict[str, str]:
        return dict(self.exchange.get("stages", {}))

    @property
    def flags(self) -> list[str]:
        return list(self.exchange.get("flags", []))

    @property
    def degraded(self) -> bool:
        from grace.observers import INFORMATIONAL_FLAGS

        return any(flag not in INFORMATIONAL_FLAGS for flag in self.flags)


def admin_url(obj: Any) -> str:
    meta = obj._meta
    try:
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return ""


def _read(story: RequestStory, name: str, query: Callable[[], list[Any]]) -> list[Any]:
    try:
        return query()
    except Exception as exc:
        logger.warning("request page: %s unavailable: %s: %s", name, type(exc).__name__, exc)
        story.unavailable[name] = f"{type(exc).__name__}: {exc}"[:200]
        return []


def request_story(*, request_id: str) -> RequestStory:
    from chat.models import CausalEvent, LearningRecord, Message, SecurityEvent
    from executor.models import TaskRecord
    from grace.metrics.models import MetricEvent
    from grace.models import AuditEntry, ErrorLog
    from grace.routers import METRICS_DB

    rid = request_id.strip()[:64]
    story = RequestStory(request_id=rid)
    story.messages = _read(story, "messages", lambda: list(
        Message.objects.filter(request_id=rid).select_related("conversation")
        .order_by("created", "id")[:LIMIT]))
    story.reply = next((m for m in story.messages if m.role == "assistant"), None)
    story.security_events = _read(story, "security events", lambda: list(
        SecurityEvent.objects.filter(request_id=rid).order_by("created", "id")[:LIMIT]))
    story.tasks = _read(story, "tasks", lambda: list(
        TaskRecord.objects.filter(request_id=rid).order_by("sequence")[:LIMIT]))
    story.errors = _read(story, "error log", lambda: list(
        ErrorLog.objects.filter(request_id=rid).order_by("created", "id")[:LIMIT]))
    story.audit = _read(story, "audit log", lambda: list(
        AuditEntry.objects.filter(request_id=rid).order_by("sequence")[:LIMIT]))
    story.metrics = _read(story, "metrics", lambda: list(
        MetricEvent.objects.using(METRICS_DB).filter(request_id=rid)
        .order_by("created", "id")[:LIMIT]))
    story.learning = _read(story, "learning records", lambda: list(
        LearningRecord.objects.filter(request_id=rid).order_by("created")[:LIMIT]))
    story.causal = _read(story, "causal events", lambda: list(
        CausalEvent.objects.filter(request_id=rid).order_by("created")[:LIMIT]))
    story.timeline = _timeline(story)
    return story


def _timeline(story: RequestStory) -> list[Moment]:
    moments: list[Moment] = []
    for m in story.messages:
        moments.append(Moment(m.created, "message", f"{m.role} message in conversation "
                              f"{m.conversation_id}", admin_url(m)))
    for e in story.security_events:
        moments.append(Moment(e.created, "security", f"{e.rule_name}: {e.action} "
                              f"({e.kind}, {e.severity})", admin_url(e)))
    for t in story.tasks:
        moments.append(Moment(t.enqueued_at, "task", f"{t.task_name} enqueued", admin_url(t)))
        if t.finished_at:
            moments.append(Moment(t.finished_at, "task", f"{t.task_name} {t.status} after "
                                  f"{t.attempts} attempt(s)", admin_url(t)))
    for r in story.errors:
        moments.append(Moment(r.created, "error", f"{r.status} {r.exception_class}",
                              admin_url(r)))
    for a in story.audit:
        moments.append(Moment(a.created, "audit", f"#{a.sequence} {a.action} {a.resource}",
                              admin_url(a)))
    for x in story.metrics:
        if x.name == "http_requests":
            labels = x.labels or {}
            moments.append(Moment(x.created, "http", f"{labels.get('method')} "
                                  f"{labels.get('route')} -> {labels.get('status')}"))
    for r in story.learning:
        moments.append(Moment(r.created, "learning", f"captured ({r.sensitivity})",
                              admin_url(r)))
    for c in story.causal:
        moments.append(Moment(c.created, "causal", f"{c.event_type} -> {c.outcome}",
                              admin_url(c)))
    return sorted(moments, key=lambda moment: moment.time)


def recent_request_ids(*, limit: int = 15) -> list[tuple[str, datetime, str]]:
    """The newest request IDs in the audit log and the error log: (ID, time, what), to
    click through. Both reads walk an index from its newest end."""
    from grace.models import AuditEntry, ErrorLog

    seen: dict[str, tuple[str, datetime, str]] = {}
    for rid, created, action in (
        AuditEntry.objects.exclude(request_id="").order_by("-sequence")
        .values_list("request_id", "created", "action")[: limit * 8]
    ):
        if rid not in seen:
            seen[rid] = (rid, created, action)
    for rid, created, status in (
        ErrorLog.objects.exclude(request_id="").order_by("-created")
        .values_list("request_id", "created", "status")[:limit]
    ):
        if rid not in seen or seen[rid][1] < created:
            seen[rid] = (rid, created, f"error {status}")
    return sorted(seen.values(), key=lambda row: row[1], reverse=True)[:limit]
