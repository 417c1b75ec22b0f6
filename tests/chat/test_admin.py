"""The chat admin: every page renders; tokens are shown once and revocable; the API
schema documents the chat endpoints."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from grace.models import ApiToken

pytestmark = pytest.mark.django_db

MODELS = [
    "conversation", "message", "apitoken", "knowledgeentry", "knowledgegap", "securityrule",
    "securityevent", "learningrecord", "causalevent",
]


@pytest.mark.parametrize("model", MODELS)
def test_changelist_and_add_pages_render(admin_client, model):
    assert admin_client.get(reverse(f"admin:chat_{model}_changelist")).status_code == 200
    add = admin_client.get(reverse(f"admin:chat_{model}_add"))
    assert add.status_code in {200, 403}


def test_token_added_in_admin_is_shown_once_and_stored_hashed(admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:chat_apitoken_add"),
        {"user": admin_user.pk, "name": "laptop", "revoked_0": "", "revoked_1": ""},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    raw = next(m.split("The new token is ")[1].split(" ")[0] for m in shown if "new token" in m)
    token = ApiToken.objects.get()
    assert token.key_hash == ApiToken.hash_key(raw) and raw.startswith(token.prefix)
    page = admin_client.get(reverse("admin:chat_apitoken_change", args=[token.pk]))
    assert raw not in page.content.decode()


def test_revoke_action(admin_client, admin_user):
    from grace.auth import api_token_create, api_token_user

    token, raw = api_token_create(user=admin_user)
    response = admin_client.post(
        reverse("admin:chat_apitoken_changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.revoked is not None and api_token_user(raw) is None


def test_openapi_documents_the_chat_api():
    schema = Client().get("/api/openapi.json").json()
    paths = {"/api/chat/", "/api/chat/conversations", "/api/chat/conversations/{conversation_id}"}
    assert paths <= set(schema["paths"])
    chat_in = schema["components"]["schemas"]["ChatIn"]
    assert chat_in["properties"]["message"]["maxLength"] == 4000
    assert chat_in["additionalProperties"] is False
