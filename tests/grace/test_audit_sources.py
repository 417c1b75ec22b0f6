"""What gets audited: chat exchanges, security events, admin actions, API token creation
and revocation; with actors and request IDs, never contents. A task's own state changes
are not (they live in its row; docs/operations.md, "What is audited")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.models import SecurityRule
from grace.audit import audit_verify
from grace.audit_writer import audit_flush
from grace.auth import api_token_create
from grace.models import ApiToken, AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)

FLAGGED = "Why does my login query say: SELECT name FROM users WHERE id = 7 OR 1=1"


def entries(**filters: Any) -> list[AuditEntry]:
    assert audit_flush(5.0)
    return list(AuditEntry.objects.filter(**filters).order_by("sequence"))


def chat(client: Client, message: str, **headers: str) -> dict[str, Any]:
    response = client.post("/api/chat/", data=json.dumps({"message": message}),
                           content_type="application/json", headers=headers)
    assert response.status_code == 200
    return response.json()


def test_an_exchange_and_its_security_event_are_audited_its_tasks_are_not(seeded_rules):
    user = get_user_model().objects.create_user("ada", password="pw-ada-123")
    _, raw = api_token_create(user=user, name="audit")
    body = chat(Client(), FLAGGED, Authorization=f"Bearer {raw}")
    found = entries(request_id=body["request_id"])
    actions = [e.action for e in found]
    assert actions.count("chat.exchange") == 1
    assert actions.count("security.event") == 1
    # Immediate backend: each follow-up task is enqueued, started and finished at once,
    # and none of it is a chain entry (tests/executor/test_audit.py: the row tells it).
    assert not [a for a in actions if a.startswith("task.")], actions
    exchange = next(e for e in found if e.action == "chat.exchange")
    assert exchange.actor == f"user:{user.pk}"
    assert exchange.resource == f"chat.conversation:{body['conversation_id']}"
    assert exchange.payload["message_id"] == body["message_id"]
    assert exchange.payload["flags"] == ["security_alert"]
    security = next(e for e in found if e.action == "security.event")
    assert security.payload["rule"] == "sql-injection-tautology"
    assert "SELECT" not in json.dumps([e.payload for e in found])
    assert audit_verify().ok


def test_anonymous_actor_is_a_hash_of_the_session_never_the_key(ops_chat):
    client = Client()
    body = chat(client, "Hello")
    (exchange,) = entries(request_id=body["request_id"], action="chat.exchange")
    session_key = client.session.session_key
    assert exchange.actor.startswith("anonymous:")
    assert session_key and session_key not in exchange.actor


def test_tokens_created_and_revoked_are_audited(ops_chat):
    root = get_user_model().objects.create_superuser("root", password="pw-root-123")
    token, _ = api_token_create(user=root, name="ci")
    resource = f"chat.apitoken:{token.pk}"
    assert [e.action for e in entries(resource=resource)] == ["token.created"]
    admin = Client()
    admin.force_login(root)
    response = admin.post("/admin/grace/apitoken/", {
        "action": "revoke", "_selected_action": [token.pk],
    })
    assert response.status_code == 302
    assert ApiToken.objects.get(pk=token.pk).revoked is not None
    revoked = entries(resource=resource, action="token.revoked")
    assert len(revoked) == 1 and revoked[0].actor == f"user:{root.pk}"
    second, _ = api_token_create(user=root, name="two")
    second.revoked = second.created
    second.save()
    assert [e.action for e in entries(resource=f"chat.apitoken:{second.pk}")] == [
        "token.created", "token.revoked",
    ]


def test_admin_actions_are_audited_with_their_actor(ops_chat):
    root = get_user_model().objects.create_superuser("root", password="pw-root-123")
    rule = SecurityRule.objects.create(name="audit-me", pattern=r"\bzzz\b")
    admin = Client()
    admin.force_login(root)
    response = admin.post(f"/admin/chat/securityrule/{rule.pk}/change/", {
        "name": "audit-me", "kind": "other", "pattern": r"\bzzz\b", "severity": "medium",
        "action": "flag", "description": "", "enabled": "",
    })
    assert response.status_code == 302, response.content[:2000]
    (change,) = entries(action="admin.change", resource=f"chat.securityrule:{rule.pk}")
    assert change.actor == f"user:{root.pk}"
    assert change.payload["change"] == [{"changed": {"fields": ["Enabled"]}}]
    assert admin.post(f"/admin/chat/securityrule/{rule.pk}/delete/", {"post": "yes"}
                      ).status_code == 302
    assert entries(action="admin.deletion", resource=f"chat.securityrule:{rule.pk}")
