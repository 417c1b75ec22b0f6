"""The event bus: ``publish(topic, payload)`` over the Channels layer.

Topics are dotted and start with one of ``chat``, ``task``, ``security``, ``error``
(``chat.reply``, ``task.finished``, ``security.block``, ``error.logged``). Each prefix has
its own group (``grace.events.chat``...); the staff feed ``/ws/events/`` joins them.
The layer is the project's ``CHANNEL_LAYERS["default"]``: in-memory (one process) by
default, Redis (every process) with ``REDIS_URL``.

``safe_publish`` is what application code calls: it never raises and never holds up an
event loop. From a thread it hands the publish to a loop (the one the feed consumers
live on when this process has one, else a small loop thread of its own) and, when asked
to wait, waits at most ``GRACE_EVENTS_TIMEOUT``. ``GRACE_FAULTS=events=...`` drills it.

Events cost nothing when nobody listens: with the in-memory layer a group without a
member in this process is skipped before the payload is built; with Redis, whether a
group has members is asked (one ``ZCOUNT``) at most once a second per group and process,
and a publish to a group that had none is skipped in between. A feed that connects in
another process may so miss up to a second of events; one that connects in this process
resets the answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

from grace.audit import json_canonical
from grace.faults import fault_inject_async, fault_mode
from grace.features import feature_enabled
from grace.ops_conf import ops_settings
from grace.request_id import request_id_get

logger = logging.getLogger(__name__)

PREFIXES: tuple[str, ...] = ("chat", "task", "security", "error")
TOPIC = re.compile(r"(chat|task|security|error)(\.[a-z0-9_]+)+")
GROUP_PREFIX = "grace.events."
MESSAGE_TYPE = "grace.event"
MAX_IN_FLIGHT = 1000  # publishes not yet done, per process; beyond it they are dropped
LISTENERS_RECHECK_SECONDS = 1.0
"""How long a "this group has no member" answer from a shared layer (Redis) is trusted."""


class EventBusError(Exception):
    """Do not raise directly: a subclass says what went wrong."""


class InvalidTopic(EventBusError, ValueError):
    """The topic is not ``<chat|task|security|error>.<name>[.<name>...]``."""


class EventBusUnavailable(EventBusError):
    """No channel layer is configured (or it cannot be loaded)."""


def topic_group(topic: str) -> str:
    if not TOPIC.fullmatch(topic):
        raise InvalidTopic(f"{topic!r} is not a topic (<{'|'.join(PREFIXES)}>.<name>).")
    return GROUP_PREFIX + topic.split(".", 1)[0]


def event_message(topic: str, payload: Any, request_id: str | None = None) -> dict[str, Any]:
    """The layer message (JSON/msgpack-safe) the feed turns into an ``event`` frame."""
    if request_id is None:
        request_id = request_id_get()
    return {
        "type": MESSAGE_TYPE,
        "topic": topic,
        "payload": json_canonical(payload or {}),
        "request_id": request_id or "",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


async def publish(topic: str, payload: Any, *, request_id: str | None = None) -> None:
    """Send one event to the topic's group; raises ``InvalidTopic``,
    ``EventBusUnavailable`` or whatever the layer raises."""
    group = topic_group(topic)
    layer = get_channel_layer()
    if layer is None:
        raise EventBusUnavailable("CHANNEL_LAYERS has no default layer")
    await layer.group_send(group, event_message(topic, payload, request_id))


_consumer_loop: asyncio.AbstractEventLoop | None = None
_own_loop: asyncio.AbstractEventLoop | None = None
_own_lock = threading.Lock()
_in_flight = 0
_tasks: set[asyncio.Task[bool]] = set()


def events_bind_loop() -> None:
    """Called on the loop the feed consumers run on: threads publish through it, so an
    in-memory layer delivers to them. Forgets which groups had no member (a feed is
    joining)."""
    global _consumer_loop
    _consumer_loop = asyncio.get_running_loop()
    _members_seen.clear()


def _loop_for_threads() -> asyncio.AbstractEventLoop:
    global _own_loop
    loop = _consumer_loop
    if loop is not None and loop.is_running() and not loop.is_closed():
        return loop
    with _own_lock:
        if _own_loop is None or _own_loop.is_closed():
            _own_loop = asyncio.new_event_loop()
            threading.Thread(
                target=_own_loop.run_forever, name="grace-events", daemon=True
            ).start()
        return _own_loop


_members_seen: dict[str, tuple[float, bool]] = {}
"""Per group of a shared layer: (``time.monotonic()`` when asked, whether it had members)."""


def _after_fork() -> None:
    global _own_loop, _consumer_loop, _in_flight
    _own_loop = _consumer_loop = None
    _in_flight = 0
    _tasks.clear()
    _members_seen.clear()


os.register_at_fork(after_in_child=_after_fork)


def _nobody_listens(group: str) -> bool:
    """An in-memory layer (one process) with no feed in this process, or a shared layer
    whose group had no member when asked less than ``LISTENERS_RECHECK_SECONDS`` ago:
    nothing to deliver, so no payload, no loop hop, no round trip."""
    if fault_mode("events"):
        return False  # drills exercise the whole path
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        return not layer.groups.get(group)
    seen = _members_seen.get(group)
    return (
        seen is not None
        and not seen[1]
        and time.monotonic() - seen[0] < LISTENERS_RECHECK_SECONDS
    )


async def _has_members(layer: Any, group: str) -> bool | None:
    """Whether ``group`` has a member on a Redis layer (channels_redis: one ``ZCOUNT`` of
    its unexpired members); None when the layer cannot say."""
    try:
        key = layer._group_key(group)
        connection = layer.connection(layer.consistent_hash(group))
        since = int(time.time()) - int(layer.group_expiry)
        return bool(await connection.zcount(key, since, "+inf"))
    except Exception:
        return None


def events_wanted(topic: str) -> bool:
    """Whether publishing ``topic`` now could reach anyone: the ``events`` feature is on,
    and the layer is not an in-memory one without a listener in this process. A caller
    that builds a payload only to publish it asks this first (``safe_publish`` drops
    such an event anyway, after the payload was built). Never raises."""
    try:
        return feature_enabled("events") and not _nobody_listens(topic_group(topic))
    except Exception:
        return False


async def _bounded(topic: str, message: dict[str, Any], timeout: float) -> bool:
    global _in_flight
    _in_flight += 1
    try:
        async with asyncio.timeout(timeout):
            await fault_inject_async("events", timeout=timeout)
            layer = get_channel_layer()
            if layer is None:
                raise EventBusUnavailable("CHANNEL_LAYERS has no default layer")
            group = topic_group(topic)
            seen = _members_seen.get(group)
            fresh = seen is not None and time.monotonic() - seen[0] < LISTENERS_RECHECK_SECONDS
            if not isinstance(layer, InMemoryChannelLayer) and not fresh and not fault_mode(
                "events"
            ):
                members = await _has_members(layer, group)
                if members is not None:
                    _members_seen[group] = (time.monotonic(), members)
                    if not members:
                        return True  # nobody to deliver to
            await layer.group_send(group, message)
        return True
    except TimeoutError:
        logger.warning("event %s not published within %ss", topic, timeout)
        return False
    except Exception as exc:
        logger.warning("event %s not published: %s: %s", topic, type(exc).__name__, exc)
        return False
    finally:
        _in_flight -= 1


async def safe_publish_async(
    topic: str, payload: Any, *, request_id: str | None = None, timeout: float | None = None
) -> bool:
    """Publish and wait (at most ``timeout``); True when the layer took the event."""
    try:
        if not feature_enabled("events"):
            return False
        message = event_message(topic, payload, request_id)
        topic_group(topic)
        return await _bounded(topic, message, ops_settings.EVENTS_TIMEOUT if timeout is None
                              else timeout)
    except Exception as exc:
        logger.warning("event %s not published: %s: %s", topic, type(exc).__name__, exc)
        return False


def safe_publish(
    topic: str,
    payload: Any,
    *,
    request_id: str | None = None,
    wait: bool | None = None,
    timeout: float | None = None,
) -> bool:
    """Publish without raising. On an event loop: scheduled, never waited for (returns
    True once scheduled). From a thread: ``wait`` (default True) waits up to ``timeout``
    and returns whether it was published; without waiting, whether it was scheduled."""
    try:
        if not feature_enabled("events"):
            return False
        topic_group(topic)
        if _in_flight >= MAX_IN_FLIGHT:
            logger.warning("event bus backlog full: %s dropped", topic)
            return False
        if _nobody_listens(topic_group(topic)):
            return True
        message = event_message(topic, payload, request_id)
        bound = ops_settings.EVENTS_TIMEOUT if timeout is None else timeout
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            task = running.create_task(_bounded(topic, message, bound))
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)
            return True
        future = asyncio.run_coroutine_threadsafe(
            _bounded(topic, message, bound), _loop_for_threads()
        )
        if wait is False:
            return True
        try:
            return future.result(bound + 0.5)
        except concurrent.futures.TimeoutError:
            return False
    except Exception as exc:
        logger.warning("event %s not published: %s: %s", topic, type(exc).__name__, exc)
        return False
