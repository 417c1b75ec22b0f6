"""What the core hears about, and what it records.

Each observation records metrics (in-memory buffer), appends an audit entry
(``safe_log``) when it is a security-relevant fact (docs/operations.md, "What is
audited"), and publishes an event (``safe_publish``) when someone listens; none of them
waits, raises or touches the caller's transaction. Model changes are observed after their
transaction commits (``on_commit``), so nothing rolled back is ever audited.

Sources, all signals: Django's (admin ``LogEntry``, ``ApiToken``, ``ErrorLog``), the
Tasks API's ``task_enqueued``/``task_started``/``task_finished``, and the core's
``tokens_revoked`` (the admin's bulk revoke is an ``update``). The apps observe their
own signals with the same services (``actor_of`` names who acted).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.contrib.admin.models import LogEntry
from django.db import transaction
from django.db.models.signals import post_delete, post_init, post_save
from django_tasks.signals import task_enqueued, task_finished, task_started

from grace.audit_writer import safe_log
from grace.auth import session_key_hash, tokens_revoked
from grace.errorlog import error_recurred
from grace.events import events_wanted, safe_publish
from grace.metrics.buffer import metric_record
from grace.models import ApiToken, ErrorLog
from grace.request_id import request_id_get

logger = logging.getLogger(__name__)

ADMIN_ACTIONS = {1: "addition", 2: "change", 3: "deletion"}


def actor_of(*, user_id: Any = None, session_key: str = "") -> str:
    """``user:<pk>``, ``anonymous:<hash of the session key>`` (never the key) or ``system``.

    ``session_key`` is the key or, as ``Owner`` and the chat tables hold it, already its
    SHA-256: both give the same actor (the first 16 hex digits of the SHA-256)."""
    if user_id is not None:
        return f"user:{user_id}"
    if session_key:
        return "anonymous:" + session_key_hash(session_key)[:16]
    return "system"


def _guard(func: Callable[..., Any]) -> Callable[..., None]:
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception:
            logger.exception("operations observer %s failed", func.__name__)

    guarded.__name__ = func.__name__
    guarded.__doc__ = func.__doc__
    return guarded


@_guard
def _tokens_revoked(sender: Any, *, user: Any, token_ids: Iterable[Any], **kwargs: Any) -> None:
    """API tokens revoked in bulk (the admin's revoke action: an ``update``)."""
    actor = actor_of(user_id=getattr(user, "pk", None))
    for token_id in token_ids:
        safe_log(action="token.revoked", actor=actor, resource=f"chat.apitoken:{token_id}",
                 wait=False)


def _admin_entry(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created:
        return

    def observe() -> None:
        content_type = instance.content_type
        model = f"{content_type.app_label}.{content_type.model}" if content_type else "?"
        try:
            change = json.loads(instance.change_message or "[]")
        except ValueError:
            change = []
        safe_log(
            action=f"admin.{ADMIN_ACTIONS.get(instance.action_flag, instance.action_flag)}",
            actor=actor_of(user_id=instance.user_id),
            resource=f"{model}:{instance.object_id}",
            payload={"change": change}, wait=False,
        )

    transaction.on_commit(_guard(observe), robust=True)


def _token_loaded(sender: Any, instance: Any, **kwargs: Any) -> None:
    instance._grace_revoked = instance.__dict__.get("revoked")


def _token_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if created:
        action = "token.created"
    elif instance.revoked is not None and getattr(instance, "_grace_revoked", None) is None:
        action = "token.revoked"
    else:
        return
    instance._grace_revoked = instance.revoked
    payload = {"owner": instance.user_id, "prefix": instance.prefix}
    resource = f"chat.apitoken:{instance.pk}"
    transaction.on_commit(_guard(lambda: safe_log(
        action=action, resource=resource, payload=payload, wait=False,
    )), robust=True)


def _token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    resource = f"chat.apitoken:{instance.pk}"
    transaction.on_commit(_guard(lambda: safe_log(
        action="token.deleted", resource=resource, payload={"owner": instance.user_id},
        wait=False,
    )), robust=True)


def _error_logged(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    metric_record("errors_logged", labels={"exception_class": instance.exception_class},
                  request_id=instance.request_id)
    safe_publish("error.logged", {
        "id": instance.pk, "status": instance.status, "method": instance.method,
        "path": instance.path, "exception_class": instance.exception_class,
    }, request_id=instance.request_id, wait=False)


def _error_recurred(sender: Any, exception_class: str, request_id: str, **kwargs: Any) -> None:
    """A repeat coalesced into its row (no post_save): still one more error logged."""
    metric_record("errors_logged", labels={"exception_class": exception_class},
                  request_id=request_id)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def _task_request_id(task_result: Any) -> str:
    """The request that enqueued the task: its ``request_id`` argument, or the request ID
    bound while the signal is sent (the enqueuing request; the worker binds the task's)."""
    kwargs = getattr(task_result, "kwargs", None) or {}
    found = kwargs.get("request_id") if isinstance(kwargs, dict) else None
    return str(found or request_id_get() or "")


def _task_observed(event: str) -> Callable[..., None]:
    """A receiver of one of the Tasks API's signals: metrics (in-memory buffer) and an
    event (``task.<event>``, published only when someone listens: grace/events.py).

    Not audited: a task's own state changes live in its row (executor ``TaskRecord``:
    status, attempts, timestamps, errors, the enqueuing request ID), which the admin and
    the request story read; the tamper-evident log keeps what a person did (cancelling or
    retrying a task from the admin is audited there) and security facts. See
    docs/operations.md, "What is audited"."""

    def receiver(sender: Any, task_result: Any, **kwargs: Any) -> None:
        task = task_result.task
        name = getattr(task, "name", "") or str(getattr(task, "module_path", "task"))
        status = str(getattr(task_result.status, "value", task_result.status))
        rid = _task_request_id(task_result)
        if event == "enqueued":
            metric_record("tasks_enqueued", labels={"task": name}, request_id=rid)
        elif event == "started":
            wait = _seconds(task_result.enqueued_at, task_result.started_at)
            if wait is not None:
                metric_record("task_wait_seconds", wait, labels={"task": name}, request_id=rid)
        else:
            metric_record("tasks_finished", labels={"task": name, "status": status},
                          request_id=rid)
            ran = _seconds(task_result.last_attempted_at or task_result.started_at,
                           task_result.finished_at)
            if ran is not None:
                metric_record("task_duration_seconds", ran, labels={"task": name},
                              request_id=rid)
        topic = f"task.{event}"
        if not events_wanted(topic):
            return
        payload: dict[str, Any] = {"resource": f"task:{task_result.id}", "task": name,
                                   "status": status, "queue": getattr(task, "queue_name", ""),
                                   "backend": getattr(task_result, "backend", "")}
        if event == "finished":
            payload["errors"] = len(getattr(task_result, "errors", []) or [])

        def observe() -> None:
            safe_publish(topic, payload, request_id=rid, wait=False)

        transaction.on_commit(_guard(observe), robust=True)

    receiver.__name__ = f"task_{event}"
    return receiver


_task_receivers = {event: _task_observed(event) for event in ("enqueued", "started", "finished")}


def observers_connect() -> None:
    """Connect every receiver (idempotent: each has a ``dispatch_uid``)."""
    post_save.connect(_admin_entry, sender=LogEntry, dispatch_uid="grace.ops.admin")
    post_save.connect(_error_logged, sender=ErrorLog, dispatch_uid="grace.ops.errorlog")
    error_recurred.connect(_error_recurred, dispatch_uid="grace.ops.errorlog.recurred")
    post_init.connect(_token_loaded, sender=ApiToken, dispatch_uid="grace.ops.token.init")
    post_save.connect(_token_saved, sender=ApiToken, dispatch_uid="grace.ops.token.save")
    post_delete.connect(_token_deleted, sender=ApiToken, dispatch_uid="grace.ops.token.del")
    tokens_revoked.connect(_tokens_revoked, dispatch_uid="grace.ops.token.revoked")
    for event, signal in (("enqueued", task_enqueued), ("started", task_started),
                          ("finished", task_finished)):
        signal.connect(_task_receivers[event], dispatch_uid=f"grace.ops.task.{event}")
