"""API tokens in the admin (the core's): created there and shown once, revoked in bulk."""

from __future__ import annotations

import pytest
from django.urls import reverse

from grace.auth import api_token_create, api_token_user
from grace.models import ApiToken

pytestmark = pytest.mark.django_db


def test_token_pages_render(admin_client):
    assert admin_client.get(reverse("admin:grace_apitoken_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:grace_apitoken_add")).status_code == 200


def test_token_added_in_admin_is_shown_once_and_stored_hashed(admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:grace_apitoken_add"),
        {"user": admin_user.pk, "name": "laptop", "revoked_0": "", "revoked_1": ""},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    raw = next(m.split("The new token is ")[1].split(" ")[0] for m in shown if "new token" in m)
    token = ApiToken.objects.get()
    assert token.key_hash == ApiToken.hash_key(raw) and raw.startswith(token.prefix)
    page = admin_client.get(reverse("admin:grace_apitoken_change", args=[token.pk]))
    assert raw not in page.content.decode()


def test_revoke_action(admin_client, admin_user):
    token, raw = api_token_create(user=admin_user)
    response = admin_client.post(
        reverse("admin:grace_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.revoked is not None and api_token_user(raw) is None
