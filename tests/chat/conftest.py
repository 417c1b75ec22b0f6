"""Fixtures of the chat API tests.

The pipeline writes from its own stage threads, so tests that post messages use
``django_db(transaction=True)``; a transactional test's flush empties every table, so
``seeded`` reloads the starter knowledge and the seeded security rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.cache import cache
from django.test import AsyncClient

from chat.security import rule_cache
from grace.faults import faults_rearm, faults_release

IMMEDIATE_TASKS = {
    "default": {
        "BACKEND": "django_tasks.backends.immediate.ImmediateBackend",
        "QUEUES": [],
        "OPTIONS": {},
    }
}
# Short timeouts so a timed-out or hung stage costs well under a second per test
# (other test modules rely on chat_config's 3 s deadline). Tests about anything but
# timeouts use ``roomy_timeouts``, so that a loaded machine cannot fail them.
FAST_TIMEOUTS = {"inspect": 0.5, "recall": 0.5, "respond": 1.0, "store": 0.6, "followup": 0.5}
ROOMY_TIMEOUTS = {"inspect": 5.0, "recall": 5.0, "respond": 10.0, "store": 5.0, "followup": 5.0}


@contextmanager
def quick_chat(settings: Any, **chat: Any) -> Iterator[Any]:
    """Anonymous chat on, throttles off, a 3 s deadline with short stage timeouts, the
    fallback backend, no faults, tasks run immediately (``chat`` adds GRACE_CHAT keys)."""
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "ALLOW_ANONYMOUS": True,
        "THROTTLE_USER": "off",
        "THROTTLE_ANON": "off",
        "PIPELINE_DEADLINE": 3.0,
        "STAGE_TIMEOUTS": dict(FAST_TIMEOUTS),
        "REPLY_BACKEND": "fallback",
        **chat,
    }
    settings.GRACE = {
        **settings.GRACE, "FAULTS": {}, "FAULT_HANG_SECONDS": 10.0, "DISABLED_FEATURES": [],
    }
    settings.TASKS = IMMEDIATE_TASKS
    rule_cache.clear()
    cache.clear()  # throttle history
    faults_rearm()
    try:
        yield settings
    finally:
        faults_release()  # let hung stage and writer threads go
        rule_cache.clear()


@pytest.fixture
def chat_config(settings: Any) -> Iterator[Any]:
    with quick_chat(settings) as configured:
        yield configured


@pytest.fixture
def fast_timeouts(chat_config: Any) -> Any:
    """A 3 s deadline and sub-second stage timeouts (chat_config's), for the fault tests."""
    chat_config.GRACE_CHAT = {
        **chat_config.GRACE_CHAT,
        "PIPELINE_DEADLINE": 3.0,
        "STAGE_TIMEOUTS": dict(FAST_TIMEOUTS),
    }
    return chat_config


@pytest.fixture
def roomy_timeouts(chat_config: Any) -> Any:
    """A 30 s deadline and stage timeouts of seconds: for tests not about timeouts."""
    chat_config.GRACE_CHAT = {
        **chat_config.GRACE_CHAT,
        "PIPELINE_DEADLINE": 30.0,
        "STAGE_TIMEOUTS": dict(ROOMY_TIMEOUTS),
    }
    return chat_config


@pytest.fixture
def seeded(chat_config: Any) -> None:
    """The starter knowledge and the seeded Hunter rules (a flush removed them)."""
    from chat.ingest import knowledge_seed
    from chat.security_seed import security_rules_seed

    knowledge_seed()
    security_rules_seed()
    rule_cache.clear()


@pytest.fixture
def client() -> AsyncClient:
    return AsyncClient()


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("ada", password="pw-ada-123")


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def token(user: Any) -> str:
    from grace.auth import api_token_create

    return api_token_create(user=user, name="tests")[1]


class ClientAt(AsyncClient):
    """An AsyncClient whose requests come from another socket address."""

    def __init__(self, ip: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ip = ip

    def _base_scope(self, **request: Any) -> dict[str, Any]:
        scope = super()._base_scope(**request)
        scope["client"] = [self.ip, 0]
        return scope


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


async def post_chat(client: AsyncClient, body: Any, **headers: str) -> Any:
    """POST /api/chat/ with a JSON body (a dict, or a raw string sent as is)."""
    data = body if isinstance(body, str) else json.dumps(body)
    return await client.post(
        "/api/chat/", data=data, content_type="application/json", headers=headers
    )
