"""``metadata.sources``: the knowledge entries a reply used, in the REST body, the SSE and
websocket ``done``, and the stored reply (so the page shows the citations after reload)."""

from __future__ import annotations

import json

import pytest

from chat.backends.sse import SSEDecoder
from tests.chat.conftest import post_chat
from tests.chat.ws_helpers import receive_until, send_json, ws
from tests.grace.support import asgi_call

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("roomy_timeouts")]

QUESTION = "How do I run the executor worker?"


def assert_cites_the_executor(body: dict) -> None:
    sources = body["metadata"]["sources"]
    assert sources, body
    assert all(set(s) == {"title", "source", "score"} for s in sources)
    assert any("executor" in s["title"].lower() for s in sources)
    assert all(s["source"].startswith("starter:") for s in sources)
    assert all(0 < s["score"] <= 1 for s in sources)
    # The reply quotes the entries it cites, under their titles.
    assert all(f"**{s['title']}**" in body["response"] for s in sources)


async def test_rest_reply_cites_its_sources_and_they_are_stored(seeded, client):
    body = (await post_chat(client, {"message": QUESTION})).json()
    assert_cites_the_executor(body)
    detail = (await client.get(f"/api/chat/conversations/{body['conversation_id']}")).json()
    reply = next(m for m in detail["messages"] if m["role"] == "assistant")
    assert reply["metadata"]["sources"] == body["metadata"]["sources"]


async def test_small_talk_has_no_sources(seeded, client):
    body = (await post_chat(client, {"message": "hello"})).json()
    assert body["metadata"]["sources"] == []


async def test_sse_done_cites_its_sources(seeded):
    status, _, raw = await asgi_call(
        "POST",
        "/api/chat/stream",
        headers=[(b"content-type", b"application/json")],
        chunks=[json.dumps({"message": QUESTION}).encode()],
    )
    assert status == 200
    events = SSEDecoder().feed(raw)
    done = [json.loads(e.data) for e in events if e.event == "done"]
    assert len(done) == 1
    assert_cites_the_executor(done[0])


async def test_websocket_done_cites_its_sources(seeded):
    communicator = ws()
    connected, _ = await communicator.connect()
    assert connected
    await send_json(communicator, {"type": "message", "message": QUESTION})
    done, _ = await receive_until(communicator, "done")
    assert_cites_the_executor(done)
    await communicator.disconnect()


async def test_the_schema_documents_sources(client):
    schema = (await client.get("/api/openapi.json")).json()
    metadata = schema["components"]["schemas"]["ChatMetadata"]
    assert "sources" in metadata["properties"]
    source = schema["components"]["schemas"]["SourceOut"]
    assert set(source["properties"]) == {"title", "source", "score"}
