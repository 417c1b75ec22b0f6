"""Anonymous visitors' session keys are stored only as their SHA-256: no table (but
Django's own session table) holds a key that works as a cookie, the admin shows the hash
as the audit log names it, the visitor keeps their conversations, and the migration hashes
the keys stored before, on every row."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.test import AsyncClient, Client
from django.utils import timezone

from chat.models import Conversation, RuleKind, SecurityEvent, SecurityRule
from chat.security import rule_cache
from grace.auth import Owner
from grace.models import AuditEntry
from tests.chat.conftest import post_chat
from tests.chat.ws_helpers import receive_until, send_json, ws
from tests.timing import wait_until_async

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "metrics"]),
    pytest.mark.usefixtures("roomy_timeouts"),
]

WORD = "zebracornflag"  # the flag rule below: a security event with the session's owner


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _text(value: Any) -> str:
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode(errors="ignore")
    return str(value)


def tables_holding(needle: str) -> list[str]:
    """Every ``alias:table.column`` of both databases whose value contains ``needle``."""
    found = set()
    for alias in ("default", "metrics"):
        conn = connections[alias]
        with conn.cursor() as cursor:
            for table in conn.introspection.table_names(cursor):
                if table.startswith("sqlite_"):
                    continue
                cursor.execute(f"SELECT * FROM {conn.ops.quote_name(table)}")  # noqa: S608
                columns = [d[0] for d in cursor.description]
                for row in cursor.fetchall():
                    for column, value in zip(columns, row, strict=True):
                        if needle in _text(value):
                            found.add(f"{alias}:{table}.{column}")
    return sorted(found)


@pytest.fixture
async def flag_rule(chat_config):
    await SecurityRule.objects.acreate(
        name="test-session-flag", kind=RuleKind.OTHER, pattern=WORD, action="flag"
    )
    rule_cache.clear()


async def test_no_table_holds_an_anonymous_visitors_session_key(flag_rule):
    client = AsyncClient()
    first = await post_chat(client, {"message": f"what is a {WORD}?"})
    assert first.status_code == 200, first.content
    conversation_id = first.json()["conversation_id"]
    again = await post_chat(client, {"message": "and then?", "conversation_id": conversation_id})
    assert again.status_code == 200
    raw = client.cookies["sessionid"].value

    # The same visitor over the websocket (their cookie): a second conversation.
    communicator = ws(headers=[(b"cookie", f"sessionid={raw}".encode())])
    connected, _ = await communicator.connect()
    assert connected
    await send_json(communicator, {"type": "message", "message": f"more {WORD} please"})
    done, _ = await receive_until(communicator, "done")
    await communicator.disconnect()
    ws_conversation = done["conversation_id"]

    actor = "anonymous:" + sha256(raw)[:16]  # as before the change: audit actors are stable
    await wait_until_async(
        lambda: AuditEntry.objects.filter(actor=actor, action="security.event").acount(),
        timeout=10,
        message="the security events' audit entries",
    )
    holding_raw = await sync_to_async(tables_holding)(raw)
    assert holding_raw == ["default:django_session.session_key"]  # Django's own store only
    holding_hash = await sync_to_async(tables_holding)(sha256(raw))
    assert "default:chat_conversation.session_key" in holding_hash
    assert "default:chat_securityevent.session_key" in holding_hash
    assert await SecurityEvent.objects.filter(session_key=sha256(raw)).acount() == 2

    listing = await client.get("/api/chat/conversations")
    assert listing.status_code == 200
    assert {conversation_id, ws_conversation} <= {c["id"] for c in listing.json()["items"]}
    stranger = await AsyncClient().get("/api/chat/conversations")
    assert stranger.status_code == 200 and stranger.json()["items"] == []


def test_the_admin_shows_the_hash_as_the_audit_log_names_it(chat_config):
    raw = "k" * 32
    now = timezone.now()
    conversation = Conversation.objects.create(
        session_key=Owner(session_key=raw).session_key, title="t", created=now, updated=now
    )
    event = SecurityEvent.objects.create(
        rule_name="r", kind="other", severity="low", action="flag", session_key=sha256(raw)
    )
    staff = get_user_model().objects.create_superuser("boss", password="pw-boss-12345")
    browser = Client()
    browser.force_login(staff)
    for url in (
        f"/admin/chat/conversation/{conversation.pk}/change/",
        f"/admin/chat/securityevent/{event.pk}/change/",
    ):
        page = browser.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert "anonymous:" + sha256(raw)[:16] in html
        assert "SHA-256" in html
        assert raw not in html and sha256(raw) not in html


def _before_hashing() -> list[tuple[str, str]]:
    loader = MigrationExecutor(connection).loader
    return list(loader.get_migration("chat", "0007_session_key_hashes").dependencies)


def test_the_migration_hashes_stored_keys_and_the_visitor_keeps_their_conversations(
    chat_config,
):
    before = _before_hashing()
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldConversation = old.get_model("chat", "Conversation")
    OldEvent = old.get_model("chat", "SecurityEvent")
    session = SessionStore()
    session["grace_anonymous"] = True
    session.create()
    raw = session.session_key
    now = timezone.now()
    theirs = OldConversation.objects.create(session_key=raw, title="a", created=now, updated=now)
    others = [
        OldConversation.objects.create(session_key="", title="b", created=now, updated=now),
        OldConversation.objects.create(session_key="x" * 32, title="c", created=now, updated=now),
    ]
    for key in (raw, raw, ""):
        OldEvent.objects.create(
            rule_name="r", kind="other", severity="low", action="flag", session_key=key
        )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert Conversation.objects.count() == 3 and SecurityEvent.objects.count() == 3
    assert Conversation.objects.get(pk=theirs.pk).session_key == sha256(raw)
    assert Conversation.objects.get(pk=others[0].pk).session_key == ""
    assert Conversation.objects.get(pk=others[1].pk).session_key == sha256("x" * 32)
    assert sorted(SecurityEvent.objects.values_list("session_key", flat=True)) == sorted(
        ["", sha256(raw), sha256(raw)]
    )
    assert tables_holding(raw) == ["default:django_session.session_key"]
    # The visitor's same cookie still finds their conversation.
    visitor = Client()
    visitor.cookies["sessionid"] = raw
    listing = visitor.get("/api/chat/conversations")
    assert listing.status_code == 200
    assert [c["id"] for c in listing.json()["items"]] == [str(theirs.pk)]
