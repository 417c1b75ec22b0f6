"""The API token cache (grace.token_cache): a busy token costs no lookup per request,
and every revocation grace/revocation.py hears of is seen by the very next request.

Each test first uses the token (so that it is cached), then revokes it one way, then
asks again: 401 at once (403 for a demoted staff user on the staff-only task API). A
direct SQL update (no receiver hears of it) is seen within the re-check bound."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient, Client
from django.utils import timezone

import grace.auth
from grace.auth import api_token_create
from grace.models import ApiToken
from grace.token_cache import TokenCache, token_cache
from tests.chat.conftest import bearer
from tests.timing import limit, wait_until_async

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("roomy_timeouts"),
]

LIST = "/api/chat/conversations"


@pytest.fixture(autouse=True)
def _empty_cache():
    token_cache.clear()
    yield
    token_cache.clear()


async def status(client: AsyncClient, raw: str) -> int:
    return (await client.get(LIST, headers=bearer(raw))).status_code


@pytest.fixture
def lookups(monkeypatch):
    """Counts the token lookups that reach the database."""
    calls: list[str] = []
    real = grace.auth.api_token_lookup

    def counted(raw: str):
        calls.append(raw)
        return real(raw)

    monkeypatch.setattr(grace.auth, "api_token_lookup", counted)
    return calls


async def test_a_used_token_is_not_looked_up_again(client, token, lookups):
    assert [await status(client, token) for _ in range(3)] == [200, 200, 200]
    assert len(lookups) == 1


async def test_an_unknown_token_is_never_cached(client, lookups):
    assert [await status(client, "grc_unknown") for _ in range(2)] == [401, 401]
    assert len(lookups) == 2
    assert len(token_cache) == 0


async def test_revoked_in_the_admin_action(client, user, token):
    assert await status(client, token) == 200

    def revoke_in_admin() -> int:
        admin = get_user_model().objects.create_superuser("root", password="pw-root-123")
        browser = Client()
        browser.force_login(admin)
        pk = ApiToken.objects.get(user=user).pk
        return browser.post(
            "/admin/grace/apitoken/", {"action": "revoke", "_selected_action": [str(pk)]}
        ).status_code

    assert await sync_to_async(revoke_in_admin)() == 302
    response = await client.get(LIST, headers=bearer(token))
    assert response.status_code == 401
    assert "revoked" in response.json()["message"]


async def test_saved_as_revoked(client, user, token):
    assert await status(client, token) == 200
    row = await ApiToken.objects.aget(user=user)
    row.revoked = timezone.now()
    await row.asave()
    assert await status(client, token) == 401


async def test_deleted(client, user, token):
    assert await status(client, token) == 200
    await ApiToken.objects.filter(user=user).adelete()
    assert await status(client, token) == 401


async def test_user_deactivated(client, user, token):
    assert await status(client, token) == 200
    user.is_active = False
    await user.asave()
    assert await status(client, token) == 401


async def test_user_deleted(client, user, token):
    assert await status(client, token) == 200
    await user.adelete()
    assert await status(client, token) == 401


async def test_only_the_revoked_token_is_forgotten(client, user, token, other_user):
    _, others = await sync_to_async(api_token_create)(user=other_user, name="bob's")
    assert await status(client, token) == 200
    assert await status(client, others) == 200
    row = await ApiToken.objects.aget(user=user)
    row.revoked = timezone.now()
    await row.asave()
    assert await status(client, token) == 401
    assert await status(client, others) == 200


async def test_staff_removed(client, settings, user, token):
    """The staff-only task API reads ``request.user`` of the token: a demotion is seen by
    the next request."""
    user.is_staff = True
    await user.asave()
    unknown = {"task": "no.such.task"}
    staff = await client.post("/api/tasks/", unknown, content_type="application/json",
                              headers=bearer(token))
    assert staff.status_code == 404  # past the staff check
    user.is_staff = False
    await user.asave()
    demoted = await client.post("/api/tasks/", unknown, content_type="application/json",
                                headers=bearer(token))
    assert demoted.status_code == 403


@pytest.mark.parametrize("how", ["token", "user"])
async def test_a_direct_sql_update_is_seen_within_the_recheck(settings, client, user, token, how):
    """No receiver hears of it: the cached entry expires after the re-check interval."""
    settings.GRACE = {**settings.GRACE, "WS_AUTH_RECHECK_SECONDS": 0.3}
    assert await status(client, token) == 200
    if how == "token":
        await ApiToken.objects.filter(user=user).aupdate(revoked=timezone.now())
    else:
        await get_user_model().objects.filter(pk=user.pk).aupdate(is_active=False)

    async def refused() -> bool:
        return await status(client, token) == 401

    await wait_until_async(refused, timeout=limit(0.3 + 3), message="the token refused")


async def test_a_lookup_that_raced_a_revocation_is_not_stored(user, token):
    """A read that began before a ``forget`` may have seen the row before the revocation:
    it is not cached."""
    cache = TokenCache()
    found = await sync_to_async(grace.auth.api_token_lookup)(token)
    generation = cache.generation
    cache.forget(token_ids=[found.pk])
    cache.put(token, found, generation=generation, checked=0.0)
    assert cache.get(token) is None


async def test_the_cached_user_is_a_copy_per_request(client, user, token, monkeypatch):
    seen = []
    real = grace.auth.ApiTokenAuth.authenticate

    async def spy(self, request, raw):
        owner = await real(self, request, raw)
        seen.append(request.user)
        return owner

    monkeypatch.setattr(grace.auth.ApiTokenAuth, "authenticate", spy)
    assert [await status(client, token) for _ in range(3)] == [200, 200, 200]
    assert len({id(u) for u in seen}) == 3
    assert {u.pk for u in seen} == {user.pk}
