"""The token cache across processes: two daphne servers share one database and Redis,
each has the token cached; a token revoked by a third process (``manage.py shell``, as
any management command would) is refused by the very next request on both. The
servers' re-check is set far beyond the test, so only the channel layer can have told
them."""

from __future__ import annotations

import httpx
import pytest

from tests.grace.ops_support import manage_run
from tests.servers import GraceServer

pytestmark = pytest.mark.slow

REVOKE = """
from django.utils import timezone
from grace.models import ApiToken
for token in ApiToken.objects.filter(name="multi"):
    token.revoked = timezone.now()
    token.save()
print("revoked")
"""


def test_a_token_revoked_by_another_process_is_refused_by_every_server(tmp_path, redis_url):
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
        token = created.stdout.strip().splitlines()[-1]
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
