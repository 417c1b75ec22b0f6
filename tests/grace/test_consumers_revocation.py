"""``/ws/events/`` for the life of the socket (issue 14, findings 4 and 5): a staff user
demoted, deactivated or logged out loses the feed at once (in-memory and Redis layers),
or within ``GRACE_WS_AUTH_RECHECK_SECONDS`` after a direct SQL update; hostile frames
never break the feed, and too many of them close it (1008)."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from grace.models import ErrorLog
from tests.grace.test_events import feed
from tests.timing import limit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_recheck(layer, settings):
    """Only the channel layer can close a socket here (no periodic re-check)."""
    settings.GRACE = {**settings.GRACE, "WS_AUTH_RECHECK_SECONDS": 300.0}


async def staff_feed():
    """A staff user, their session key, and their open feed (after its hello)."""

    def make():
        user = get_user_model().objects.create_user("ops", password="pw-ops-123", is_staff=True)
        client = Client()
        client.force_login(user)
        return user, client.cookies["sessionid"].value

    user, key = await sync_to_async(make)()
    communicator = feed((b"cookie", f"sessionid={key}".encode()))
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from())["type"] == "hello"
    return user, key, communicator


async def closed(communicator, *, status: int, code: int, reason: str, timeout: float = 5.0):
    frame = await communicator.receive_json_from(timeout=limit(timeout))
    assert frame["type"] == "error" and frame["status"] == status, frame
    assert frame["details"] == [{"reason": reason}] and frame["request_id"]
    assert await communicator.receive_output(timeout=limit(2)) == {
        "type": "websocket.close",
        "code": code,
    }
    return frame


async def test_a_demoted_staff_user_loses_the_feed_at_once(layer):
    user, _, communicator = await staff_feed()
    user.is_staff = False
    await user.asave()
    frame = await closed(communicator, status=403, code=4403, reason="staff_removed")
    assert frame["error"] == "forbidden"
    assert frame["message"] == "The account of this connection is no longer staff."


async def test_a_deactivated_staff_user_loses_the_feed_at_once(layer):
    user, _, communicator = await staff_feed()
    user.is_active = False
    await user.asave()
    await closed(communicator, status=401, code=4401, reason="user_inactive")


async def test_a_logged_out_staff_session_loses_the_feed_at_once(layer):
    _, key, communicator = await staff_feed()

    def logout() -> None:
        client = Client()
        client.cookies["sessionid"] = key
        client.logout()

    await sync_to_async(logout)()
    await closed(communicator, status=401, code=4401, reason="logged_out")


async def test_another_users_change_leaves_the_feed_open(layer):
    _, _, communicator = await staff_feed()
    other = await sync_to_async(get_user_model().objects.create_user)(
        "visitor", password="pw-visitor-1", is_staff=True
    )
    other.is_staff = False
    await other.asave()
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong"}
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("update", "status", "code", "reason"),
    [
        ({"is_staff": False}, 403, 4403, "staff_removed"),
        ({"is_active": False}, 401, 4401, "user_inactive"),
    ],
)
async def test_a_direct_sql_update_closes_the_feed_within_the_recheck(
    settings, update, status, code, reason
):
    settings.GRACE = {**settings.GRACE, "WS_AUTH_RECHECK_SECONDS": 0.2}
    user, _, communicator = await staff_feed()
    await get_user_model().objects.filter(pk=user.pk).aupdate(**update)
    await closed(communicator, status=status, code=code, reason=reason, timeout=0.2 + 3)


async def test_hostile_frames_are_ignored_without_errors(caplog):
    _, _, communicator = await staff_feed()
    with caplog.at_level(logging.WARNING):
        for text in ("[" * 20000 + "]" * 20000, '{"n": ' + "9" * 5000 + "}", "NaN", "[1]"):
            await communicator.send_to(text_data=text)
        await communicator.send_json_to({"type": "ping"})
        assert await communicator.receive_json_from() == {"type": "pong"}
    await communicator.disconnect()
    assert await ErrorLog.objects.acount() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_too_many_bad_frames_close_the_feed_with_1008(settings):
    settings.GRACE = {**settings.GRACE, "WS_BAD_FRAMES": 3, "WS_BAD_FRAMES_SECONDS": 60.0}
    _, _, communicator = await staff_feed()
    for _ in range(4):
        await communicator.send_to(text_data="[" * 20000 + "]" * 20000)
    frame = await communicator.receive_json_from()
    assert frame["type"] == "error" and frame["status"] == 429
    assert frame["error"] == "too_many_bad_frames"
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 1008}
    await communicator.disconnect()  # the consumer ends on a live loop
