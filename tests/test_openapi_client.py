"""A client generated from ``/api/openapi.json`` by an independent generator
(openapi-python-client, the dev extra's) works against a live server: it sends a chat,
reads the conversation back, and gets its errors typed as ``ErrorOut``.

Before the errors were documented, the generated client returned ``None`` for every 401,
404 and 422 (statuses the schema did not name), with the error body left unparsed.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import GraceServer, manage

pytestmark = pytest.mark.slow

PACKAGE = "grace_client"
QUESTION = "How do I run the executor?"


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Yields a function that generates the client from a schema URL and imports it."""

    def generate(url: str) -> Any:
        schema = tmp_path / "openapi.json"
        schema.write_text(httpx.get(url, timeout=30).text)
        config = tmp_path / "config.yml"
        config.write_text("post_hooks: []\n")  # no formatter run on the generated code
        out = tmp_path / "client"
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "openapi-python-client"),
                "generate",
                "--path",
                str(schema),
                "--config",
                str(config),
                "--meta",
                "none",
                "--output-path",
                str(out / PACKAGE),
                "--fail-on-warning",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        monkeypatch.syspath_prepend(str(out))
        import importlib

        return importlib.import_module(PACKAGE)

    yield generate
    for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def test_a_generated_client_chats_reads_back_and_types_its_errors(tmp_path, generated):
    (tmp_path / "server").mkdir()
    with GraceServer(tmp_path / "server", {"GRACE_REPLY_BACKEND": "fallback"}) as server:
        token = manage(server.env, "create_api_token", "ada", "--create-user").stdout.strip()
        generated(f"{server.url}/api/openapi.json")
        from grace_client import AuthenticatedClient, Client  # type: ignore[import-not-found]
        from grace_client.api.chat import (  # type: ignore[import-not-found]
            chat_post,
            conversation_get,
            conversation_list,
        )
        from grace_client.models import (  # type: ignore[import-not-found]
            ChatIn,
            ChatOut,
            ConversationDetail,
            ConversationPage,
            ErrorOut,
        )

        client = AuthenticatedClient(base_url=server.url, token=token, timeout=60)
        reply = chat_post.sync(client=client, body=ChatIn(message=QUESTION))
        assert isinstance(reply, ChatOut), reply
        assert reply.response.strip()
        assert reply.request_id and reply.metadata.backend

        detail = conversation_get.sync(
            client=client, conversation_id=uuid.UUID(reply.conversation_id)
        )
        assert isinstance(detail, ConversationDetail), detail
        assert [(m.role, m.content) for m in detail.messages] == [
            ("user", QUESTION),
            ("assistant", reply.response),
        ]
        page = conversation_list.sync(client=client)
        assert isinstance(page, ConversationPage)
        assert [item.id for item in page.items] == [uuid.UUID(reply.conversation_id)]

        # Errors: parsed as ErrorOut, the request ID that of the header.
        anonymous = chat_post.sync_detailed(
            client=Client(base_url=server.url, timeout=60), body=ChatIn(message="hi")
        )
        assert anonymous.status_code == 401
        assert isinstance(anonymous.parsed, ErrorOut), anonymous.content
        assert anonymous.parsed.error == "unauthorized"
        assert anonymous.parsed.request_id == anonymous.headers["x-request-id"]

        empty = chat_post.sync_detailed(client=client, body=ChatIn(message="   "))
        assert empty.status_code == 422
        assert isinstance(empty.parsed, ErrorOut), empty.content
        assert empty.parsed.error == "validation_error"
        assert empty.parsed.details[0]["field"] == "message"

        missing = conversation_get.sync_detailed(client=client, conversation_id=uuid.uuid4())
        assert missing.status_code == 404
        assert isinstance(missing.parsed, ErrorOut) and missing.parsed.error == "not_found"
