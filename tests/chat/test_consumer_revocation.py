"""Credentials checked for the life of ``/ws/chat/`` (finding 5 of issue 14).

A token revoked (the admin's action, its change form, a delete), a user deactivated or a
session logged out closes the open socket at once, on the in-memory and the Redis
channel layer: an ``error`` frame (401), then close 4401, the generation in flight
cancelled with its partial reply stored. A change the channel layer never hears of (a
direct SQL update) closes it within ``GRACE_WS_AUTH_RECHECK_SECONDS``.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from chat.models import Message
from grace.auth import api_token_create
from grace.models import ApiToken
from tests.chat.ws_helpers import receive_until, send_json, session_cookie, ws
from tests.e2e.slow_backend import WORDS
from tests.timing import limit, wait_until_async

pytestmark = [pytest.mark.django_db(transaction=True)]

SLOW = {"BACKEND": "tests.e2e.slow_backend.SlowBackend", "OPTIONS": {"DELAY": 0.05}}
NEVER = 300.0  # a re-check interval no test waits for: only the channel layer can close


@pytest.fixture(autouse=True)
def _config(chat_config, settings, layer):
    """Tokens and sessions only (no anonymous chat); no periodic re-check unless a test
    asks for one."""
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "ALLOW_ANONYMOUS": False,
        "REPLY_BACKENDS": {**settings.GRACE_CHAT["REPLY_BACKENDS"], "slow": SLOW},
        "PIPELINE_DEADLINE": 10.0,
        "STAGE_TIMEOUTS": {**settings.GRACE_CHAT["STAGE_TIMEOUTS"], "respond": 8.0},
    }
    settings.GRACE = {**settings.GRACE, "WS_AUTH_RECHECK_SECONDS": NEVER}


def bearer(raw: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {raw}".encode())


async def open_socket(*headers: tuple[bytes, bytes]):
    communicator = ws(headers=list(headers))
    connected, _ = await communicator.connect()
    assert connected
    # Positive control: the socket chats before the revocation.
    await send_json(communicator, {"type": "message", "message": "Hello"})
    await receive_until(communicator, "done")
    return communicator


async def closed_as_revoked(communicator, reason: str, *, timeout: float = 5.0) -> dict:
    """The last frames a revoked socket gets: an error frame (401), then close 4401."""
    frame, _before = await receive_until(communicator, "error", timeout=timeout)
    assert frame["status"] == 401 and frame["error"] == "unauthorized", frame
    assert frame["details"] == [{"reason": reason}]
    assert frame["request_id"]
    assert await communicator.receive_output(timeout=limit(2)) == {
        "type": "websocket.close",
        "code": 4401,
    }
    return frame


async def still_chats(communicator) -> None:
    await send_json(communicator, {"type": "message", "message": "Still there?"})
    done, _ = await receive_until(communicator, "done")
    assert done["response"]


async def test_a_token_revoked_by_the_admin_action_closes_its_socket(user, token):
    communicator = await open_socket(bearer(token))

    def revoke_in_admin() -> int:
        admin = get_user_model().objects.create_superuser("root", password="pw-root-123")
        client = Client()
        client.force_login(admin)
        pk = ApiToken.objects.get(user=user).pk
        response = client.post(
            "/admin/grace/apitoken/",
            {"action": "revoke", "_selected_action": [str(pk)]},
        )
        return response.status_code

    assert await sync_to_async(revoke_in_admin)() == 302
    frame = await closed_as_revoked(communicator, "token_revoked")
    assert frame["message"] == "The API token of this connection was revoked."


async def test_a_token_saved_as_revoked_or_deleted_closes_its_socket(user, token):
    communicator = await open_socket(bearer(token))
    row = await ApiToken.objects.aget(user=user)
    row.revoked = timezone.now()
    await row.asave()  # the admin's change form, a shell, a command
    await closed_as_revoked(communicator, "token_revoked")

    _, second = await sync_to_async(api_token_create)(user=user, name="second")
    communicator = await open_socket(bearer(second))
    await ApiToken.objects.filter(name="second").adelete()
    await closed_as_revoked(communicator, "token_revoked")


async def test_only_the_revoked_tokens_socket_closes(user, token, other_user):
    _, others = await sync_to_async(api_token_create)(user=other_user, name="bob's")
    mine = await open_socket(bearer(token))
    theirs = await open_socket(bearer(others))
    await ApiToken.objects.filter(user=user).aupdate(revoked=timezone.now())
    row = await ApiToken.objects.aget(user=user)  # the update sent nothing; a save does
    row.name = "revoked"
    await row.asave()  # revoked was already set when loaded: nothing new to announce
    await still_chats(mine)  # stays open until the re-check (NEVER here)
    await still_chats(theirs)
    await mine.disconnect()
    await theirs.disconnect()


async def test_a_deactivated_user_is_closed_and_the_reply_in_flight_is_cancelled(
    settings, user, token
):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "REPLY_BACKEND": "slow"}
    communicator = await open_socket(bearer(token))
    await send_json(communicator, {"type": "message", "message": "Tell me a story"})
    start, _ = await receive_until(communicator, "start")
    await receive_until(communicator, "token")
    user.is_active = False
    await user.asave()
    frame = await closed_as_revoked(communicator, "user_inactive")
    assert frame["message"] == "The account of this connection was deactivated."

    async def stored_reply() -> Message | None:
        stored = [m async for m in Message.objects.filter(request_id=start["request_id"])]
        return next((m for m in stored if m.role == "assistant"), None)

    reply = await wait_until_async(stored_reply, timeout=5, message="the partial reply stored")
    assert "stopped" in reply.metadata.get("flags", [])
    assert 0 < len(reply.content) < len(" ".join(WORDS))


async def test_a_logged_out_session_is_closed():
    user, cookie = await session_cookie("carol")
    communicator = await open_socket(cookie)
    key = cookie[1].decode().split("=", 1)[1]

    def logout() -> None:
        client = Client()
        client.cookies["sessionid"] = key
        client.logout()

    await sync_to_async(logout)()
    frame = await closed_as_revoked(communicator, "logged_out")
    assert "logged out" in frame["message"]


async def test_a_demoted_staff_user_still_chats(user, token):
    user.is_staff = True
    await user.asave()
    communicator = await open_socket(bearer(token))
    user.is_staff = False
    await user.asave()
    await still_chats(communicator)
    await communicator.disconnect()


@pytest.mark.parametrize("how", ["token", "user", "session"])
async def test_a_direct_sql_update_closes_the_socket_within_the_recheck(settings, user, token, how):
    """No signal, no message: the periodic re-check finds it."""
    settings.GRACE = {**settings.GRACE, "WS_AUTH_RECHECK_SECONDS": 0.2}
    if how == "session":
        user, cookie = await session_cookie("dave")
        communicator = await open_socket(cookie)
    else:
        communicator = await open_socket(bearer(token))
    if how == "token":
        await ApiToken.objects.filter(user=user).aupdate(revoked=timezone.now())
        reason = "token_revoked"
    else:
        await get_user_model().objects.filter(pk=user.pk).aupdate(is_active=False)
        reason = "user_inactive"
    await closed_as_revoked(communicator, reason, timeout=0.2 + 3)


@pytest.mark.parametrize("layer", ["memory"], indirect=True)  # the layer plays no part
async def test_the_default_recheck_closes_within_10_seconds(settings, user, token, layer):
    settings.GRACE = {**settings.GRACE, "WS_AUTH_RECHECK_SECONDS": 5.0}  # the default
    communicator = await open_socket(bearer(token))
    await ApiToken.objects.filter(user=user).aupdate(revoked=timezone.now())
    await closed_as_revoked(communicator, "token_revoked", timeout=10)
