"""Two web processes on one PostgreSQL and one Redis, as in the production layout: a chat
exchange on one process reaches a staff client of the live event feed (``/ws/events/``)
connected to the other, through the Redis channel layer; both report PostgreSQL and the
channel layer healthy."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.scale.support import NO_THROTTLE, api_token, servers_start, servers_stop
from tests.servers import GraceServer, manage, scratch_postgres_database

pytestmark = pytest.mark.slow

STAFF_SESSION = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
user = get_user_model().objects.create_user("ops", password="pw-ops-123", is_staff=True)
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key)
"""


async def feed_until(url: str, session_key: str, origin: str, send) -> tuple[dict, dict]:
    """Connect to the feed, run ``send()`` (in a thread), return (reply, matching event)."""
    headers = {"Cookie": f"sessionid={session_key}", "Origin": origin}
    async with websockets.connect(url, additional_headers=headers) as feed:
        assert json.loads(await asyncio.wait_for(feed.recv(), 10))["type"] == "hello"
        reply = await asyncio.to_thread(send)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # other test runs may share this Redis
            frame = json.loads(await asyncio.wait_for(feed.recv(), 15))
            if frame.get("request_id") == reply["request_id"]:
                return reply, frame
    raise AssertionError("the event never reached the other process's feed")


def test_event_feed_fans_out_across_two_web_processes(postgres_url, redis_url, tmp_path):
    with scratch_postgres_database(postgres_url, "grace_fanout") as db, \
            scratch_postgres_database(postgres_url, "grace_fanout_m") as metrics:
        env = {**NO_THROTTLE, "DATABASE_URL": db, "GRACE_METRICS_DATABASE_URL": metrics,
               "REDIS_URL": redis_url, "GRACE_LOG_LEVEL": "WARNING"}
        first = GraceServer(tmp_path, env)
        first.__enter__()  # migrates the shared databases
        second = GraceServer(tmp_path, env, migrate_first=False)
        try:
            servers_start([second])
            token = api_token(first.env, "fanout")
            session_key = manage(first.env, "shell", "-v", "0", "-c",
                                 STAFF_SESSION).stdout.strip().splitlines()[-1]

            def chat_on_first() -> dict:
                response = httpx.post(f"{first.url}/api/chat/", timeout=30,
                                      json={"message": "How do I run the executor worker?"},
                                      headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 200, response.text
                return response.json()

            feed = second.url.replace("http://", "ws://") + "/ws/events/?topics=chat"
            reply, event = asyncio.run(feed_until(feed, session_key, second.url, chat_on_first))
            for server in (first, second):
                health = httpx.get(f"{server.url}/api/health", timeout=10).json()
                assert health["status"] == "ok"
                checks = health["checks"]
                assert checks["database:default"]["vendor"] == "postgresql"
                assert checks["database:metrics"]["vendor"] == "postgresql"
                assert checks["channel_layer"]["status"] == "ok"
        finally:
            servers_stop([second, first])
    assert reply["degraded"] is False
    assert event["type"] == "event" and event["topic"] == "chat.reply"
    assert event["payload"]["conversation_id"] == reply["conversation_id"]
