"""The event bus and ``/ws/events/`` through grace.asgi.application: staff only, events
delivered (from the loop and from threads), topic filters, and safe_publish under faults."""

from __future__ import annotations

import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from grace.asgi import application
from grace.events import InvalidTopic, publish, safe_publish, safe_publish_async
from tests.timing import limit

pytestmark = pytest.mark.django_db(transaction=True)


async def login_cookie(username: str, *, staff: bool) -> tuple[bytes, bytes]:
    def make() -> str:
        user = get_user_model().objects.create_user(
            username, password="pw-not-used-123", is_staff=staff
        )
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    return (b"cookie", f"sessionid={await sync_to_async(make)()}".encode())


def feed(cookie: tuple[bytes, bytes] | None = None, query: str = "") -> WebsocketCommunicator:
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
    if cookie is not None:
        headers.append(cookie)
    path = "/ws/events/" + (f"?{query}" if query else "")
    return WebsocketCommunicator(application, path, headers=headers)


async def staff_feed(query: str = "") -> WebsocketCommunicator:
    communicator = feed(await login_cookie("ops", staff=True), query)
    connected, _ = await communicator.connect()
    assert connected
    hello = await communicator.receive_json_from()
    assert hello["type"] == "hello"
    return communicator


async def test_anonymous_and_non_staff_are_refused():
    for cookie in (None, await login_cookie("visitor", staff=False)):
        communicator = feed(cookie)
        connected, code = await communicator.connect()
        assert not connected
        assert code == 4403
        await communicator.disconnect()


async def test_staff_feed_delivers_published_events():
    communicator = await staff_feed()
    await publish("chat.reply", {"message_id": "m-1", "degraded": False}, request_id="rid-1")
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["type"] == "event"
    assert frame["topic"] == "chat.reply"
    assert frame["payload"] == {"message_id": "m-1", "degraded": False}
    assert frame["request_id"] == "rid-1" and frame["time"]
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong"}
    await communicator.disconnect()


async def test_events_published_from_threads_and_the_loop_arrive():
    communicator = await staff_feed()
    published = await sync_to_async(safe_publish, thread_sensitive=False)(
        "task.finished", {"task_id": "t-1"}, request_id="rid-thread"
    )
    assert published is True
    frame = await communicator.receive_json_from(timeout=5)
    assert (frame["topic"], frame["request_id"]) == ("task.finished", "rid-thread")
    assert safe_publish("error.logged", {"id": 3}) is True  # on the loop: scheduled
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["topic"] == "error.logged" and frame["payload"] == {"id": 3}
    await communicator.disconnect()


async def test_topic_filter_limits_the_feed():
    communicator = await staff_feed("topics=security")
    await publish("chat.reply", {"n": 1})
    await publish("security.block", {"n": 2})
    frame = await communicator.receive_json_from(timeout=limit(5))
    assert frame["topic"] == "security.block"  # the feed is in order: chat.reply was dropped
    assert await communicator.receive_nothing(timeout=limit(0.2))
    await communicator.disconnect()


async def test_bad_topics_are_refused():
    with pytest.raises(InvalidTopic):
        await publish("billing.paid", {})
    assert await safe_publish_async("chat", {}) is False
    assert safe_publish("Chat.Reply", {}) is False


@pytest.mark.parametrize("mode", ["error", "timeout", "hang"])
async def test_safe_publish_under_faults_is_false_and_bounded(ops_chat: Any, mode: str):
    communicator = await staff_feed()
    # Positive control: before the fault, the same feed gets what is published.
    assert await safe_publish_async("chat.reply", {"n": 0}) is True
    frame = await communicator.receive_json_from(timeout=limit(5))
    assert frame["payload"] == {"n": 0}
    ops_chat.GRACE = {
        **ops_chat.GRACE,
        "FAULTS": {"events": mode},
        "EVENTS_TIMEOUT": 0.3,
    }
    started = time.monotonic()
    assert await safe_publish_async("chat.reply", {"n": 1}) is False
    threaded = sync_to_async(safe_publish, thread_sensitive=False)
    assert await threaded("chat.reply", {"n": 2}, wait=True) is False
    assert time.monotonic() - started < 2 * 0.3 + limit(1.5)
    assert await communicator.receive_nothing(timeout=limit(0.2))
    await communicator.disconnect()


async def test_feed_is_closed_when_events_are_switched_off(ops_chat: Any):
    ops_chat.GRACE = {**ops_chat.GRACE, "DISABLED_FEATURES": ["events"]}
    communicator = feed(await login_cookie("ops", staff=True))
    connected, code = await communicator.connect()
    assert not connected and code == 4503
    assert await safe_publish_async("chat.reply", {}) is False


async def test_a_real_chat_exchange_reaches_the_feed(seeded_rules: Any):
    from django.test import AsyncClient

    from tests.grace.ops_support import chat_post

    communicator = await staff_feed()
    response = await chat_post(
        AsyncClient(), "Why does my login query say: SELECT name FROM users WHERE id = 7 OR 1=1"
    )
    body = response.json()
    topics: dict[str, dict] = {}
    while "chat.reply" not in topics or "security.flag" not in topics:
        frame = await communicator.receive_json_from(timeout=5)
        topics.setdefault(frame["topic"], frame)
    reply = topics["chat.reply"]
    assert reply["request_id"] == body["request_id"]
    assert reply["payload"]["message_id"] == body["message_id"]
    assert reply["payload"]["degraded"] is False
    assert topics["security.flag"]["payload"]["rule"] == "sql-injection-tautology"
    assert "SELECT" not in str(reply["payload"])
    await communicator.disconnect()


async def test_nobody_listening_is_skipped_and_a_joining_feed_gets_events(layer):
    """With no feed, an event is dropped cheaply (Redis: the empty group is remembered
    for a second, no publish in between); a feed that joins gets the next event."""
    from grace import events

    events._members_seen.clear()
    assert await safe_publish_async("chat.reply", {"n": 0}) is True  # nobody: not a failure
    assert events.events_wanted("chat.reply") is False
    assert safe_publish("chat.reply", {"n": 0}) is True
    communicator = await staff_feed()
    assert events.events_wanted("chat.reply") is True
    assert safe_publish("chat.reply", {"n": 1}) is True
    frame = await communicator.receive_json_from(timeout=5)
    assert frame["topic"] == "chat.reply" and frame["payload"] == {"n": 1}
    await communicator.disconnect()
