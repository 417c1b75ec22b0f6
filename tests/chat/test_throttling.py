"""Throttles: per user and per anonymous client IP; 429 with Retry-After; "off"."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

from tests.chat.conftest import ClientAt, bearer, post_chat

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("roomy_timeouts"),
]


async def test_anonymous_callers_are_throttled_per_ip(seeded, chat_config):
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "THROTTLE_ANON": "2/min"}
    first, second = AsyncClient(), AsyncClient()  # two sessions, one IP
    assert (await post_chat(first, {"message": "hi"})).status_code == 200
    assert (await post_chat(second, {"message": "hi"})).status_code == 200
    response = await post_chat(first, {"message": "hi"})
    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "rate_limited" and body["request_id"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert str(retry_after) in body["message"]
    assert (await post_chat(ClientAt("10.1.2.3"), {"message": "hi"})).status_code == 200
    # A forged X-Forwarded-For does not reset the limit (GRACE_NUM_PROXIES=0).
    forged = await post_chat(first, {"message": "hi"}, **{"X-Forwarded-For": "10.9.9.9"})
    assert forged.status_code == 429


async def test_users_are_throttled_per_user(seeded, client, token, chat_config):
    chat_config.GRACE_CHAT = {
        **chat_config.GRACE_CHAT,
        "THROTTLE_USER": "3/hour",
        "THROTTLE_ANON": "1/hour",  # the anonymous limit does not apply
    }
    for _ in range(3):
        assert (await post_chat(client, {"message": "hi"}, **bearer(token))).status_code == 200
    response = await post_chat(client, {"message": "hi"}, **bearer(token))
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 60
    listing = await client.get("/api/chat/conversations", headers=bearer(token))
    assert listing.status_code == 429  # one budget for the whole chat API


async def test_off_disables_throttling(seeded, client, chat_config):
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "THROTTLE_ANON": "off"}
    for _ in range(5):
        assert (await post_chat(client, {"message": "hi"})).status_code == 200


@pytest.fixture
def no_blocking_count(monkeypatch):
    """The synchronous count (which blocks the event loop while it waits) must not be
    used by the chat API or the websocket: they await the store instead."""
    import chat.throttling

    def blocking(*args, **kwargs):
        raise AssertionError("the chat API blocked the event loop on a throttle count")

    monkeypatch.setattr(chat.throttling, "throttle_count", blocking)


@pytest.mark.usefixtures("no_blocking_count")
async def test_the_api_awaits_its_counts(seeded, client, token, chat_config):
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "THROTTLE_USER": "2/hour"}
    statuses = [
        (await post_chat(client, {"message": "hi"}, **bearer(token))).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


@pytest.mark.usefixtures("no_blocking_count")
async def test_the_order_stays_401_then_429_then_422(seeded, client, token, chat_config):
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "THROTTLE_USER": "1/hour"}
    assert (await post_chat(client, {"message": "hi"}, **bearer("grc_nope"))).status_code == 401
    assert (await post_chat(client, {"message": ""}, **bearer(token))).status_code == 422
    assert (await post_chat(client, {"message": ""}, **bearer(token))).status_code == 429


async def test_a_failing_store_refuses_the_request(seeded, client, token, chat_config,
                                                   monkeypatch):
    import chat.throttling

    async def failing(*args, **kwargs):
        raise TimeoutError("the store did not answer")

    monkeypatch.setattr(chat.throttling, "throttle_count_async", failing)
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "THROTTLE_USER": "100/hour"}
    response = await post_chat(client, {"message": "hi"}, **bearer(token))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
