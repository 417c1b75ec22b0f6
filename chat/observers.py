"""What the operations parts of the core hear from the chat app: finished replies,
Hunter's security events and each reply backend call become metrics, audit entries and
events on the bus. Connected from ``ChatConfig.ready()``; every receiver only hands
its work to the core's non-blocking services (``safe_log``, ``safe_publish``,
``metric_record``), never waits and never raises.

The audit action names (``chat.exchange``, ``security.event``) and the event topics are
public: the admin and the event feed's consumers read them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from chat.backends.usage import UsageEvent
from chat.metrics import stage_outcomes
from chat.turn import INFORMATIONAL_FLAGS
from grace.audit_writer import safe_log
from grace.events import safe_publish
from grace.metrics.buffer import metric_record
from grace.observers import actor_of

logger = logging.getLogger(__name__)


def _log_and_publish(
    *,
    action: str,
    topic: str,
    actor: str,
    resource: str,
    payload: dict[str, Any],
    request_id: str,
) -> None:
    safe_log(
        action=action,
        actor=actor,
        resource=resource,
        payload=payload,
        request_id=request_id,
        wait=False,
    )
    safe_publish(topic, {"resource": resource, **payload}, request_id=request_id, wait=False)


def reply_observe(*, owner: Any, body: dict[str, Any], **kwargs: Any) -> None:
    """``reply_finished``: metrics, the ``chat.exchange`` audit entry, ``chat.reply``."""
    meta = body.get("metadata", {})
    flags = list(meta.get("flags", []))
    stages = dict(meta.get("stages", {}))
    degraded = bool(body.get("degraded"))
    rid = str(body.get("request_id") or "")
    backend = meta.get("backend", "")
    metric_record("chat_replies", labels={"backend": backend, "degraded": degraded}, request_id=rid)
    metric_record("chat_reply_duration_seconds", meta.get("duration_ms", 0) / 1000, request_id=rid)
    for stage, status in stage_outcomes(stages, flags).items():
        metric_record(
            "chat_stage_outcomes", labels={"stage": stage, "status": status}, request_id=rid
        )
    if degraded:
        for flag in flags:
            if flag not in INFORMATIONAL_FLAGS:
                metric_record("chat_degraded_flags", labels={"flag": flag}, request_id=rid)
    payload = {
        "conversation_id": body.get("conversation_id"),
        "message_id": body.get("message_id"),
        "degraded": degraded,
        "flags": flags,
        "stages": stages,
        "backend": backend,
        "duration_ms": meta.get("duration_ms"),
        "via": getattr(owner, "via", ""),
    }
    _log_and_publish(
        action="chat.exchange",
        topic="chat.reply",
        actor=actor_of(user_id=owner.user_id, session_key=owner.session_key),
        resource=f"chat.conversation:{body.get('conversation_id')}",
        payload=payload,
        request_id=rid,
    )


def security_events_observe(*, events: Iterable[Any], **kwargs: Any) -> None:
    """``security_events_recorded``: one metric, audit entry and event per row."""
    for event in events:
        metric_record(
            "security_events",
            labels={"kind": event.kind, "action": event.action},
            request_id=event.request_id,
        )
        _log_and_publish(
            action="security.event",
            topic=f"security.{event.action}",
            actor=actor_of(user_id=event.user_id, session_key=event.session_key),
            resource=f"chat.securityevent:{event.pk}",
            payload={
                "rule": event.rule_name,
                "kind": event.kind,
                "severity": event.severity,
                "action": event.action,
                "match_count": event.match_count,
                "conversation_id": event.conversation_id,
            },
            request_id=event.request_id or "",
        )


def usage_observe(event: UsageEvent) -> None:
    """A reply backend call (``chat.backends.usage``): the ``model_*`` metrics."""
    backend, rid = event.backend, event.request_id or ""
    metric_record(
        "model_requests", labels={"backend": backend, "outcome": event.status}, request_id=rid
    )
    if event.status != "circuit_open":
        metric_record(
            "model_latency_seconds",
            event.latency_ms / 1000,
            labels={"backend": backend},
            request_id=rid,
        )
    if event.first_token_ms is not None:
        metric_record(
            "model_first_token_seconds",
            event.first_token_ms / 1000,
            labels={"backend": backend},
            request_id=rid,
        )
    for kind, tokens in (("prompt", event.prompt_tokens), ("completion", event.completion_tokens)):
        if tokens:
            metric_record(
                "model_tokens", tokens, labels={"backend": backend, "kind": kind}, request_id=rid
            )
