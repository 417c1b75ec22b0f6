"""Moving ApiToken from the chat app to the core keeps every issued token working, with
its id, its fields, its content type (permissions, admin history) and its admin links."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from grace.auth import api_token_new, api_token_prefix, api_token_user
from grace.models import ApiToken

BEFORE = [("grace", "0002_auditentry"), ("chat", "0004_seed_security_rules")]
CONTENT_TYPES = ("contenttypes", "0002_remove_content_type_name")


@pytest.mark.django_db(transaction=True)
def test_tokens_issued_before_the_move_keep_working():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state([*BEFORE, CONTENT_TYPES]).apps
    user = old.get_model("auth", "User").objects.create(username="early", is_active=True)
    raw = api_token_new()
    OldToken = old.get_model("chat", "ApiToken")
    token = OldToken.objects.create(
        user=user, name="cli", prefix=api_token_prefix(raw), key_hash=ApiToken.hash_key(raw)
    )
    old_type = old.get_model("contenttypes", "ContentType").objects.get(
        app_label="chat", model="apitoken"
    )
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    assert "chat_apitoken" in tables and "grace_apitoken" not in tables

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    moved = ApiToken.objects.get(pk=token.pk)
    assert (moved.name, moved.prefix, moved.user_id) == ("cli", token.prefix, user.pk)
    assert api_token_user(raw).username == "early"  # the raw token still authenticates
    new_type = ContentType.objects.get_for_model(ApiToken)
    assert (new_type.pk, new_type.app_label) == (old_type.pk, "grace")
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    assert "grace_apitoken" in tables and "chat_apitoken" not in tables


@pytest.mark.django_db
def test_old_admin_links_to_tokens_lead_to_the_moved_admin():
    staff = get_user_model().objects.create_superuser("boss", password="pw-boss-12345")
    client = Client()
    client.force_login(staff)
    token = ApiToken.objects.create(user=staff, prefix="grc_abcdef", key_hash="x" * 64)
    LogEntry.objects.log_actions(
        user_id=staff.pk, queryset=[token], action_flag=ADDITION, change_message='[{"added": {}}]'
    )

    response = client.get(f"/admin/chat/apitoken/{token.pk}/change/?_changelist_filters=a")
    assert response.status_code == 301
    assert response["Location"] == (
        f"/admin/grace/apitoken/{token.pk}/change/?_changelist_filters=a"
    )
    page = client.get(response["Location"])
    assert page.status_code == 200 and "grc_abcdef" in page.content.decode()
    history = client.get(f"/admin/grace/apitoken/{token.pk}/history/")
    assert history.status_code == 200 and "Added" in history.content.decode()
