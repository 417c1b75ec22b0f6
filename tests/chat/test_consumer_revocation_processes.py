"""Revocation across processes: two daphne servers share one database and Redis; a token
revoked by a third process (``manage.py shell``, as any management command would) closes
the sockets open on both servers at once (issue 14, finding 5), and the very next request
with it is refused by both although both had it cached (the token cache). The servers'
periodic re-check is set far beyond the test's wait, so only the channel layer can have
told them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.grace.ops_support import manage_run
from tests.servers import GraceServer
from tests.timing import limit

pytestmark = pytest.mark.slow

REVOKE = """
from django.utils import timezone
from grace.models import ApiToken
for token in ApiToken.objects.filter(name="multi"):
    token.revoked = timezone.now()
    token.save()
print("revoked")
"""


async def chat_socket(server: GraceServer, token: str):
    url = server.url.replace("http://", "ws://") + "/ws/chat/"
    socket = await websockets.connect(
        url,
        additional_headers={"Origin": server.url, "Authorization": f"Bearer {token}"},
        subprotocols=["grace.v1"],  # type: ignore[list-item]
    )
    await socket.send(json.dumps({"type": "message", "message": "Hello"}))
    while True:  # positive control: the socket chats before the revocation
        frame = json.loads(await asyncio.wait_for(socket.recv(), limit(20)))
        if frame["type"] == "done":
            return socket
        assert frame["type"] in ("start", "token"), frame


async def closed_as_revoked(socket) -> tuple[dict, int]:
    frame = json.loads(await asyncio.wait_for(socket.recv(), limit(10)))
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        await asyncio.wait_for(socket.recv(), limit(5))
    return frame, closed.value.rcvd.code


@pytest.fixture
def two_servers(tmp_path, redis_url) -> Iterator[tuple[GraceServer, GraceServer, str]]:
    """Two servers on one database and Redis, and an API token of a new user."""
    env = {
        "REDIS_URL": redis_url,
        "GRACE_WS_AUTH_RECHECK_SECONDS": "600",
        "GRACE_THROTTLE_USER": "off",
    }
    with (
        GraceServer(tmp_path, env) as first,
        GraceServer(tmp_path, env, migrate_first=False) as second,
    ):
        created = manage_run(
            first.env, "create_api_token", "multi-user", "--name", "multi", "--create-user"
        )
        assert created.returncode == 0, created.stderr
        yield first, second, created.stdout.strip().splitlines()[-1]


def test_a_token_revoked_by_another_process_closes_its_sockets_on_every_server(two_servers):
    first, second, token = two_servers

    async def scenario() -> list[tuple[dict, int]]:
        sockets = [await chat_socket(first, token), await chat_socket(second, token)]
        revoked = await asyncio.to_thread(
            manage_run, first.env, "shell", "-v", "0", "-c", REVOKE
        )
        assert revoked.stdout.strip().endswith("revoked"), revoked.stderr
        return [await closed_as_revoked(socket) for socket in sockets]

    for frame, code in asyncio.run(scenario()):
        assert frame["type"] == "error" and frame["status"] == 401, frame
        assert frame["details"] == [{"reason": "token_revoked"}]
        assert code == 4401


def test_a_token_revoked_by_another_process_is_refused_by_every_server(two_servers):
    first, second, token = two_servers
    headers = {"Authorization": f"Bearer {token}"}
    servers = (first, second)
    for server in servers:  # cached on both (twice: the second from the cache)
        for _ in range(2):
            response = httpx.get(server.url + "/api/chat/conversations", headers=headers)
            assert response.status_code == 200, response.text
    revoked = manage_run(first.env, "shell", "-v", "0", "-c", REVOKE)
    assert revoked.stdout.strip().endswith("revoked"), revoked.stderr
    for server in servers:
        response = httpx.get(server.url + "/api/chat/conversations", headers=headers)
        assert response.status_code == 401, (server.url, response.text, server.log()[-3000:])
        assert "revoked" in response.json()["message"]
