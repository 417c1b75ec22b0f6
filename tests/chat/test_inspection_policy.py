"""Inspection that overload cannot skip (issue 14, finding 1): secrets are masked inline
before anything else, whatever fails; a failed inspection answers (default) or refuses
(``GRACE_INSPECTION_ON_FAILURE=refuse``); admission control refuses a burst past its
share with 503 ``busy`` instead of letting it starve everyone else's messages.

Every check reads what a user or an operator sees: the HTTP answer, and every text
column of every table (``raw_secret_locations``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import connection

from chat.admission import admission
from chat.models import Conversation, Message, SecurityEvent
from grace.auth import Owner
from tests.chat.conftest import bearer, post_chat

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_MESSAGE = f"Why does boto3 refuse my key {AWS_KEY} for the question of refunds?"


def raw_secret_locations(secret: str) -> list[str]:
    """Every ``table.column`` of the database whose text holds ``secret``."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            if table.startswith("sqlite_") or table.endswith(("_fts", "_data", "_idx")):
                continue
            columns = connection.introspection.get_table_description(cursor, table)
            for column in columns:
                name = connection.ops.quote_name(column.name)
                cast = "TEXT" if connection.vendor != "postgresql" else "text"
                try:
                    cursor.execute(
                        f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)} "  # noqa: S608
                        f"WHERE CAST({name} AS {cast}) LIKE %s",
                        [f"%{secret}%"],
                    )
                except Exception:  # noqa: S112 - a column that cannot be cast holds no text
                    continue
                if cursor.fetchone()[0]:
                    found.append(f"{table}.{column.name}")
    return found


async def locations(secret: str) -> list[str]:
    from asgiref.sync import sync_to_async

    return await sync_to_async(raw_secret_locations)(secret)


def faults(config: Any, value: Any) -> None:
    config.GRACE = {**config.GRACE, "FAULTS": value}


@pytest.mark.django_db(transaction=True)
async def test_the_scan_finds_a_raw_secret_where_one_is_stored(seeded, client, chat_config):
    """Positive control of the scan used below: a raw key in a title is found."""
    from django.utils import timezone

    now = timezone.now()
    await Conversation.objects.acreate(
        title=f"key {AWS_KEY}", session_key="s", created=now, updated=now
    )
    assert "chat_conversation.title" in await locations(AWS_KEY)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["error", "timeout", "hang"])
async def test_a_failed_inspection_answers_with_the_secrets_already_masked(
    seeded, client, fast_timeouts, mode
):
    faults(fast_timeouts, {"inspect": mode})
    response = await post_chat(client, {"message": SECRET_MESSAGE})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["metadata"]["stages"]["inspect"] == ("error" if mode == "error" else "timeout")
    assert {"inspection_skipped", "redacted"} <= set(body["metadata"]["flags"])
    assert body["degraded"] is True
    stored = [m.content async for m in Message.objects.filter(role="user")]
    assert len(stored) == 1 and "[REDACTED:secret]" in stored[0]
    assert await locations(AWS_KEY) == []
    # The masking's own finding is still an event the operator sees.
    assert await SecurityEvent.objects.filter(action="redact").aexists()


@pytest.mark.django_db(transaction=True)
async def test_masking_is_not_switched_off_with_inspection(seeded, client, chat_config):
    chat_config.GRACE = {**chat_config.GRACE, "DISABLED_FEATURES": ["inspection"]}
    response = await post_chat(client, {"message": SECRET_MESSAGE})
    body = response.json()
    assert body["metadata"]["stages"]["inspect"] == "skipped"
    assert "redacted" in body["metadata"]["flags"]
    assert AWS_KEY not in body["response"]
    assert await locations(AWS_KEY) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["error", "timeout", "hang"])
async def test_when_masking_fails_the_message_is_refused_and_nothing_is_kept(
    seeded, client, fast_timeouts, mode
):
    faults(fast_timeouts, {"mask": mode})
    response = await post_chat(client, {"message": SECRET_MESSAGE})
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["error"] == "masking_failed"
    assert response.headers["Retry-After"] == str(body["details"][0]["retry_after"])
    assert await Message.objects.acount() == 0
    assert await Conversation.objects.acount() == 0
    assert await locations(AWS_KEY) == []


@pytest.mark.django_db(transaction=True)
async def test_refuse_policy_refuses_when_inspection_fails(seeded, client, fast_timeouts):
    fast_timeouts.GRACE_CHAT = {**fast_timeouts.GRACE_CHAT, "INSPECTION_ON_FAILURE": "refuse"}
    faults(fast_timeouts, {"inspect": "error"})
    response = await post_chat(client, {"message": "How do I run the executor?"})
    assert response.status_code == 503
    assert response.json()["error"] == "inspection_failed"
    assert int(response.headers["Retry-After"]) >= 1
    assert await Message.objects.acount() == 0
    # Without the fault the same policy answers.
    faults(fast_timeouts, {})
    assert (await post_chat(client, {"message": "How do I run the executor?"})).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_a_caller_past_their_share_is_busy_while_others_are_answered(
    seeded, chat_config, user, other_user, token
):
    from django.test import AsyncClient

    from grace.auth import api_token_create

    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "ADMISSION_TURNS_PER_CALLER": 2}
    other_token = (await asyncio.to_thread(api_token_create, user=other_user, name="t"))[1]
    holder = Owner(user_id=user.pk, via="token")
    message = {"message": "How do I run the executor?"}
    with admission.admit(holder), admission.admit(holder):  # two of ada's turns in flight
        busy = await post_chat(AsyncClient(), message, **bearer(token))
        assert busy.status_code == 503
        assert busy.json()["error"] == "busy"
        assert busy.headers["Retry-After"] == "1"
        answered = await post_chat(AsyncClient(), message, **bearer(other_token))
        assert answered.status_code == 200
    again = await post_chat(AsyncClient(), message, **bearer(token))
    assert again.status_code == 200  # the places are given back
    assert admission.total == 0


@pytest.mark.django_db(transaction=True)
async def test_a_full_process_is_busy_for_everyone(seeded, client, chat_config):
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "ADMISSION_TURNS": 1}
    with admission.admit(Owner(user_id=999_999, via="token")):
        response = await post_chat(client, {"message": "hello"})
    assert response.status_code == 503
    assert response.json()["error"] == "busy"
    assert await Message.objects.acount() == 0


@pytest.mark.django_db(transaction=True)
async def test_a_burst_from_one_account_leaves_nothing_uninspected_and_no_secret_kept(
    seeded, roomy_timeouts, user, other_user, token
):
    """450 messages of 4,000 ``<`` from one account at once (throttles off), while a
    second user sends messages with an AWS key: every answered message was inspected in
    full, and no table holds the key."""
    from django.test import AsyncClient

    from grace.auth import api_token_create

    other_token = (await asyncio.to_thread(api_token_create, user=other_user, name="t"))[1]
    attacker = AsyncClient()

    async def attack() -> Any:
        return await post_chat(attacker, {"message": "<" * 4000}, **bearer(token))

    async def victim(i: int) -> Any:
        await asyncio.sleep(0.01 * i)
        return await post_chat(
            AsyncClient(), {"message": f"{SECRET_MESSAGE} ({i})"}, **bearer(other_token)
        )

    results = await asyncio.gather(*[attack() for _ in range(450)], *[victim(i) for i in range(10)])
    answered = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code != 200]
    assert {r.status_code for r in refused} <= {503}
    assert {r.json()["error"] for r in refused} <= {"busy"}
    for response in answered:
        stages = response.json()["metadata"]["stages"]
        assert stages["inspect"] in {"ok", "flagged", "blocked", "redacted"}, stages
        assert "inspection_skipped" not in response.json()["metadata"]["flags"]
    victims = [r for r in results[450:] if r.status_code == 200]
    assert victims, "the second user was starved"
    assert all(r.json()["metadata"]["stages"]["inspect"] == "redacted" for r in victims)
    assert await locations(AWS_KEY) == []


@pytest.mark.django_db(transaction=True)
async def test_stale_rules_mask_at_once_and_a_background_read_brings_edits(
    seeded, client, chat_config
):
    """Once loaded, stale rules are used at once (no message waits for the rule read)
    while one background read brings in an edit made elsewhere (no save signal here)."""
    from chat.models import SecurityRule
    from chat.security import rule_cache

    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "HUNTER_CACHE_SECONDS": 0.0}
    assert (await post_chat(client, {"message": "warm up"})).status_code == 200
    assert rule_cache.stale() is not None
    await SecurityRule.objects.filter(name="secret-aws-access-key").aupdate(enabled=False)

    async def masked() -> bool:
        body = (await post_chat(client, {"message": SECRET_MESSAGE})).json()
        return "redacted" in body["metadata"]["flags"]

    # The first message after the edit is masked with the rules it found loaded...
    assert await masked()
    # ...and soon a background read has taken the edit in.
    for _ in range(50):
        if not await masked():
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the disabled rule was still applied after 50 messages")
