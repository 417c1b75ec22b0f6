"""Django's middleware run inline on the event loop behaves as Django's own: sessions are
saved, messages stored, CSRF enforced (under ASGI, through the async client)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import AsyncClient

pytestmark = [pytest.mark.urls("tests.grace.urls"), pytest.mark.django_db(transaction=True)]


def test_settings_use_the_inline_classes():
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.utils.module_loading import import_string

    classes = [import_string(path) for path in settings.MIDDLEWARE]
    assert any(issubclass(cls, SessionMiddleware) for cls in classes)
    assert all(path.startswith("grace.") for path in settings.MIDDLEWARE)


async def test_modified_session_is_saved_under_asgi(async_client):
    """Saving hits the database: that hook still goes to a thread, and works."""
    response = await async_client.get("/pages/session/set", {"color": "green"})
    assert response.status_code == 200
    assert settings.SESSION_COOKIE_NAME in response.cookies
    again = await async_client.get("/pages/session/get")
    assert again.json() == {"color": "green"}


async def test_messages_survive_to_the_next_request(async_client):
    assert (await async_client.get("/pages/messages/add")).status_code == 200
    listed = await async_client.get("/pages/messages/list")
    assert listed.json() == {"messages": ["saved it"]}
    assert (await async_client.get("/pages/messages/list")).json() == {"messages": []}


async def test_csrf_is_enforced_for_pages():
    client = AsyncClient(enforce_csrf_checks=True)
    refused = await client.post("/pages/form", {"a": "1"})
    assert refused.status_code == 403
    assert refused["X-Request-ID"]
    page = await client.get("/admin/login/")  # sets the CSRF cookie
    token = page.cookies[settings.CSRF_COOKIE_NAME].value
    accepted = await client.post("/pages/form", {"a": "1", "csrfmiddlewaretoken": token})
    assert accepted.status_code == 200 and accepted.content == b"accepted"


async def test_admin_login_works_under_asgi(django_user_model):
    from asgiref.sync import sync_to_async

    await sync_to_async(django_user_model.objects.create_superuser)(
        "root", "root@example.com", "a-long-password-123"
    )
    client = AsyncClient(enforce_csrf_checks=True)
    page = await client.get("/admin/login/")
    token = page.cookies[settings.CSRF_COOKIE_NAME].value
    login = await client.post(
        "/admin/login/?next=/admin/",
        {"username": "root", "password": "a-long-password-123", "csrfmiddlewaretoken": token},
    )
    assert login.status_code == 302, login.content[:300]
    index = await client.get("/admin/")
    assert index.status_code == 200 and b"Site administration" in index.content


def test_security_headers_are_set(client):
    response = client.get("/admin/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
