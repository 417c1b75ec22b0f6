"""Who may chat, and whose conversations they see: tokens, sessions, anonymous sessions;
conversation listing, reading and deleting; isolation between callers."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from django.utils import timezone

from chat.models import Conversation, Message
from grace.auth import api_token_create, api_token_user
from grace.models import ApiToken
from tests.chat.conftest import bearer, post_chat

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("roomy_timeouts"),
]


async def test_anonymous_is_refused_by_default(seeded, client, chat_config):
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    response = await post_chat(client, {"message": "hi"})
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "unauthorized" and body["request_id"]
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert (await client.get("/api/chat/conversations")).status_code == 401
    assert await Message.objects.acount() == 0


async def test_token_is_stored_hashed_and_works(seeded, client, user, token, chat_config):
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    row = await ApiToken.objects.aget()
    assert token.startswith("grc_") and token not in (row.key_hash, row.prefix)
    assert row.key_hash == ApiToken.hash_key(token) and token.startswith(row.prefix)
    response = await post_chat(client, {"message": "hello"}, **bearer(token))
    assert response.status_code == 200
    conversation = await Conversation.objects.aget()
    assert conversation.user_id == user.pk and conversation.session_key == ""
    assert (await ApiToken.objects.aget()).last_used is not None


@pytest.mark.parametrize("header", ["Bearer grc_wrong", "Bearer ", "Bearer " + "x" * 500])
async def test_bad_token_is_401_even_when_anonymous_is_allowed(seeded, client, header):
    response = await client.post(
        "/api/chat/", data={"message": "hi"}, content_type="application/json",
        headers={"Authorization": header},
    )
    assert response.status_code == 401
    assert await Message.objects.acount() == 0


async def test_revoked_token_is_refused(seeded, client, token, chat_config):
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    await ApiToken.objects.all().aupdate(revoked=timezone.now())
    response = await post_chat(client, {"message": "hi"}, **bearer(token))
    assert response.status_code == 401
    assert "revoked" in response.json()["message"]
    assert await sync_to_async(api_token_user)(token) is None


async def test_inactive_users_token_is_refused(seeded, client, user, token):
    user.is_active = False
    await user.asave()
    assert (await post_chat(client, {"message": "hi"}, **bearer(token))).status_code == 401


async def test_session_login_works_with_csrf(seeded, user, chat_config):
    chat_config.GRACE_CHAT = {**chat_config.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    client = AsyncClient(enforce_csrf_checks=True)
    await client.aforce_login(user)
    refused = await post_chat(client, {"message": "hi"})
    assert refused.status_code == 403  # a logged-in session needs the CSRF token
    await client.get("/admin/login/")  # sets the csrftoken cookie
    csrf = client.cookies["csrftoken"].value
    response = await post_chat(client, {"message": "hi"}, **{"X-CSRFToken": csrf})
    assert response.status_code == 200
    assert (await Conversation.objects.aget()).user_id == user.pk


async def test_anonymous_session_is_created_and_scopes_conversations(seeded):
    alice, bob = AsyncClient(), AsyncClient()
    first = await post_chat(alice, {"message": "I am Alice"})
    assert first.status_code == 200
    assert "sessionid" in first.cookies
    cid = first.json()["conversation_id"]
    await post_chat(bob, {"message": "I am Bob"})
    listed = (await alice.get("/api/chat/conversations")).json()
    assert [c["id"] for c in listed["items"]] == [cid]
    assert (await bob.get(f"/api/chat/conversations/{cid}")).status_code == 404
    assert (await bob.delete(f"/api/chat/conversations/{cid}")).status_code == 404
    stolen = await post_chat(bob, {"message": "hi", "conversation_id": cid})
    assert stolen.status_code == 422
    again = await post_chat(alice, {"message": "what did I say?", "conversation_id": cid})
    assert "I am Alice" in again.json()["response"]
    conversation = await Conversation.objects.aget(pk=cid)
    assert conversation.user_id is None and conversation.session_key


async def test_users_are_isolated(seeded, client, user, other_user, token):
    other = (await sync_to_async(api_token_create)(user=other_user))[1]
    mine = (await post_chat(client, {"message": "mine"}, **bearer(token))).json()
    theirs = (await post_chat(client, {"message": "theirs"}, **bearer(other))).json()
    listed = (await client.get("/api/chat/conversations", headers=bearer(token))).json()
    assert [c["id"] for c in listed["items"]] == [mine["conversation_id"]]
    path = f"/api/chat/conversations/{theirs['conversation_id']}"
    response = await client.get(path, headers=bearer(token))
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert (await client.delete(path, headers=bearer(token))).status_code == 404
    assert await Conversation.objects.filter(pk=theirs["conversation_id"]).aexists()


async def test_anonymous_cannot_see_a_users_conversation(seeded, client, token):
    mine = (await post_chat(client, {"message": "secret plans"}, **bearer(token))).json()
    anonymous = AsyncClient()
    path = f"/api/chat/conversations/{mine['conversation_id']}"
    assert (await anonymous.get(path)).status_code == 404
    assert (await anonymous.get("/api/chat/conversations")).json()["count"] == 0


async def test_conversation_detail_list_and_delete(seeded, client, token):
    auth = bearer(token)
    first = (await post_chat(client, {"message": "hello"}, **auth)).json()
    cid = first["conversation_id"]
    await post_chat(client, {"message": "What is Grace?", "conversation_id": cid}, **auth)
    for n in range(3):
        await post_chat(client, {"message": f"other {n}"}, **auth)
    page = (await client.get("/api/chat/conversations?limit=2&offset=1", headers=auth)).json()
    assert page["count"] == 4 and page["limit"] == 2 and len(page["items"]) == 2
    bad = await client.get("/api/chat/conversations?limit=0", headers=auth)
    assert bad.status_code == 422
    detail = (await client.get(f"/api/chat/conversations/{cid}", headers=auth)).json()
    assert detail["message_count"] == 4 and detail["title"] == "hello"
    roles = [m["role"] for m in detail["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert detail["messages"][1]["id"] == first["message_id"]
    assert detail["messages"][1]["metadata"]["backend"] == "fallback"
    assert detail["messages"][2]["content"] == "What is Grace?"
    deleted = await client.delete(f"/api/chat/conversations/{cid}", headers=auth)
    assert deleted.status_code == 204
    assert not await Message.objects.filter(conversation_id=cid).aexists()
    assert (await client.get(f"/api/chat/conversations/{cid}", headers=auth)).status_code == 404
    assert (await client.get("/api/chat/conversations/not-a-uuid", headers=auth)).status_code in {
        404, 422,
    }
