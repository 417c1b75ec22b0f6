"""The event bus across processes over Redis (channels-redis): a staff feed on a real
server receives what another process publishes."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.grace.ops_support import manage_run

pytestmark = pytest.mark.slow

STAFF_SESSION = """
from django.contrib.auth import get_user_model, SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
user = get_user_model().objects.create_user("ops", password="pw-ops-123", is_staff=True)
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key)
"""

PUBLISH = """
from grace.events import safe_publish
print(safe_publish("task.finished", {"task_id": "t-redis"}, request_id="rid-redis", wait=True))
"""


def staff_feed(server):
    """A staff session's ``/ws/events/`` feed of task events on ``server`` (after its hello)."""
    done = manage_run(server.env, "shell", "-v", "0", "-c", STAFF_SESSION)
    assert done.returncode == 0, done.stderr
    session_key = done.stdout.strip().splitlines()[-1]
    url = server.url.replace("http://", "ws://") + "/ws/events/?topics=task"
    headers = {"Cookie": f"sessionid={session_key}", "Origin": server.url}
    return websockets.connect(url, additional_headers=headers)


async def publish_and_receive(server, feed) -> dict:
    """Publish one event from another process; the next frame on ``feed``."""
    published = await asyncio.to_thread(manage_run, server.env, "shell", "-v", "0", "-c", PUBLISH)
    assert published.stdout.strip().splitlines()[-1] == "True", published.stderr
    return json.loads(await asyncio.wait_for(feed.recv(), 10))


def test_events_published_by_another_process_reach_the_feed(grace_server, redis_url):
    with grace_server({"REDIS_URL": redis_url}) as server:

        async def scenario() -> dict:
            async with staff_feed(server) as feed:
                assert json.loads(await asyncio.wait_for(feed.recv(), 10))["type"] == "hello"
                return await publish_and_receive(server, feed)

        frame = asyncio.run(scenario())
        assert frame["type"] == "event" and frame["topic"] == "task.finished"
        assert frame["payload"] == {"task_id": "t-redis"}
        assert frame["request_id"] == "rid-redis"


def test_an_idle_feed_outlives_the_layers_blocking_reads(grace_server, redis_url):
    """channels-redis waits for a message with ``BZPOPMIN`` for 5 s; redis-py 8 gives each
    read a 5 s socket timeout by default, so an idle consumer's read timed out first and
    the socket closed with 1011 (seen under load in bench_ws). 12 s idle, then an event."""
    with grace_server({"REDIS_URL": redis_url}) as server:

        async def scenario() -> dict:
            async with staff_feed(server) as feed:
                assert json.loads(await asyncio.wait_for(feed.recv(), 10))["type"] == "hello"
                with pytest.raises(TimeoutError):  # nothing arrives, the socket stays open
                    await asyncio.wait_for(feed.recv(), 12)
                return await publish_and_receive(server, feed)

        frame = asyncio.run(scenario())
        assert frame["type"] == "event" and frame["payload"] == {"task_id": "t-redis"}
        assert "Timeout reading" not in server.log()


def test_non_staff_are_refused_by_a_real_server(grace_server):
    with grace_server() as server:
        async def scenario() -> None:
            url = server.url.replace("http://", "ws://") + "/ws/events/"
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                async with websockets.connect(url, additional_headers={"Origin": server.url}):
                    pass
            assert refused.value.response.status_code == 403

        asyncio.run(scenario())
