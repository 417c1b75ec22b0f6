"""Who may open ``/ws/chat/``: origin check, session, API token (header or subprotocol),
anonymous only when allowed."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from chat.models import Conversation
from grace.asgi import application
from tests.chat.ws_helpers import receive_until, send_json, session_cookie, ws

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _config(chat_config):
    """Throttles off, short stage timeouts (tests/chat/conftest.py); anonymous per test."""


async def _refused(communicator) -> dict:
    """An authenticated-only socket: accepted, a 401 error frame, then closed with 4401."""
    connected, _ = await communicator.connect()
    assert connected
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error" and frame["status"] == 401
    assert frame["error"] == "unauthorized" and frame["request_id"]
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}
    # As a client would: the consumer's channel-layer receive then ends on a live loop
    # (left to the loop's close, it can outwait Redis's socket timeout at teardown).
    await communicator.disconnect()
    return frame


async def _chat(communicator) -> dict:
    connected, subprotocol = await communicator.connect()
    assert connected
    await send_json(communicator, {"type": "message", "message": "Hello Grace"})
    done, _ = await receive_until(communicator, "done")
    await communicator.disconnect()
    return done


async def _owner_of(conversation_id: str) -> Conversation:
    return await Conversation.objects.aget(pk=conversation_id)


@pytest.mark.parametrize(
    "origin", [b"http://evil.example", b"null", b"http://testserver.evil.example", None]
)
async def test_a_foreign_or_missing_origin_is_rejected(origin):
    communicator = ws(origin=origin)
    connected, code = await communicator.connect()
    assert not connected and code == 1000  # the handshake is denied (HTTP 403)
    # Let the denier end now: left to the loop's close, its cancelled channel-layer
    # receive could wait on Redis (a teardown that hung once on PostgreSQL + Redis).
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        (b"localhost:8000", b"http://localhost:9999"),  # finding 8 of issue 14
        (b"localhost:8000", b"http://localhost"),
        (b"localhost", b"http://localhost:8000"),
        (b"localhost:8000", b"https://localhost"),  # https's port is 443
        (b"testserver", b"http://testserver:81"),
        (b"[::1]:8000", b"http://[::1]:8001"),
        (b"evil.example:8000", b"http://evil.example:8000"),  # not in ALLOWED_HOSTS
    ],
)
async def test_an_origin_on_another_port_is_rejected(host, origin):
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"host", host), (b"origin", origin)]
    )
    connected, code = await communicator.connect()
    assert not connected and code == 1000  # the handshake is denied (HTTP 403)
    # Let the denier end now: left to the loop's close, its cancelled channel-layer
    # receive could wait on Redis (a teardown that hung once on PostgreSQL + Redis).
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        (b"localhost:8000", b"http://localhost:8000"),
        (b"localhost", b"http://localhost"),
        (b"localhost:80", b"http://localhost"),
        (b"localhost", b"https://localhost"),  # TLS ended by a proxy: Host has no port
        (b"127.0.0.1:8000", b"http://127.0.0.1:8000"),
        (b"[::1]:8000", b"http://[::1]:8000"),
    ],
)
async def test_the_servers_own_origin_is_accepted(settings, host, origin):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": True}
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"host", host), (b"origin", origin)]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.disconnect()


async def test_a_trusted_origin_on_another_port_is_accepted(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": True}
    settings.CSRF_TRUSTED_ORIGINS = ["http://localhost:9999"]
    for origin, accepted in ((b"http://localhost:9999", True), (b"http://localhost:9998", False)):
        communicator = WebsocketCommunicator(
            application, "/ws/chat/", headers=[(b"host", b"localhost:8000"), (b"origin", origin)]
        )
        connected, _ = await communicator.connect()
        assert connected is accepted, origin
        await communicator.disconnect()


async def test_a_trusted_origin_on_another_host_is_accepted(settings):
    """The whole ASGI application decides by the same rule (Channels' host-only
    validator used to refuse a trusted origin whose host is not in ALLOWED_HOSTS)."""
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": True}
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.org"]
    for origin, accepted in ((b"https://chat.example.org", True), (b"https://evil.example", False)):
        communicator = WebsocketCommunicator(
            application, "/ws/chat/", headers=[(b"host", b"localhost:8000"), (b"origin", origin)]
        )
        connected, _ = await communicator.connect()
        assert connected is accepted, origin
        await communicator.disconnect()


async def test_the_event_feed_checks_the_origins_port_too():
    communicator = WebsocketCommunicator(
        application,
        "/ws/events/",
        headers=[(b"host", b"localhost:8000"), (b"origin", b"http://localhost:9999")],
    )
    connected, code = await communicator.connect()
    assert not connected and code == 1000  # denied before the staff check (4403)
    await communicator.disconnect()


async def test_anonymous_is_refused_when_not_allowed(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    frame = await _refused(ws())
    assert "Authorization: Bearer" in frame["message"]


async def test_anonymous_chats_when_allowed_scoped_to_its_session(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": True}
    done = await _chat(ws())
    conversation = await _owner_of(done["conversation_id"])
    assert conversation.user_id is None and conversation.session_key


async def test_a_session_user_chats_without_anonymous(settings, client):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    user, cookie = await session_cookie()
    done = await _chat(ws(headers=[cookie]))
    conversation = await _owner_of(done["conversation_id"])
    assert conversation.user_id == user.pk
    # The REST API lists it for the same session.
    await client.aforce_login(user)
    listed = (await client.get("/api/chat/conversations")).json()
    assert [item["id"] for item in listed["items"]] == [done["conversation_id"]]


async def test_an_api_token_in_the_header(settings, user, token):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    done = await _chat(ws(headers=[(b"authorization", f"Bearer {token}".encode())]))
    assert (await _owner_of(done["conversation_id"])).user_id == user.pk


async def test_an_api_token_as_a_subprotocol_is_never_echoed(settings, user, token):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    communicator = ws(subprotocols=["grace.v1", f"grace.bearer.{token}"])
    connected, subprotocol = await communicator.connect()
    assert connected and subprotocol == "grace.v1"
    await send_json(communicator, {"type": "message", "message": "Hello"})
    done, _ = await receive_until(communicator, "done")
    assert (await _owner_of(done["conversation_id"])).user_id == user.pk
    await communicator.disconnect()


async def test_a_token_wins_over_the_session(settings, token, user):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    _other, cookie = await session_cookie("carol")
    done = await _chat(ws(headers=[cookie, (b"authorization", f"Bearer {token}".encode())]))
    assert (await _owner_of(done["conversation_id"])).user_id == user.pk


@pytest.mark.parametrize("where", ["header", "subprotocol"])
async def test_a_bad_or_revoked_token_is_refused_even_with_anonymous_on(settings, token, where):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": True}
    from grace.models import ApiToken

    await ApiToken.objects.all().aupdate(revoked=timezone.now())
    for raw in (token, "grc_not-a-real-token"):
        if where == "header":
            communicator = ws(headers=[(b"authorization", f"Bearer {raw}".encode())])
        else:
            communicator = ws(subprotocols=["grace.v1", f"grace.bearer.{raw}"])
        frame = await _refused(communicator)
        assert "not valid or has been revoked" in frame["message"]


async def test_an_inactive_users_session_is_refused(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": False}
    user, cookie = await session_cookie()
    user.is_active = False
    await sync_to_async(user.save)()
    await _refused(ws(headers=[cookie]))
