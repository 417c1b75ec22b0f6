"""``POST /api/chat/stream`` on a real Grace server (daphne) with a real model behind it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat.backends.sse import SSEDecoder, SSEEvent
from tests.chat.llm_fixtures import Scripted, Upstream, chunk, sse
from tests.servers import GraceServer
from tests.timing import limit, wait_until

pytestmark = pytest.mark.slow

BASE_ENV = {
    "GRACE_ALLOW_ANONYMOUS": "true",
    "GRACE_THROTTLE_ANON": "off",
    "GRACE_THROTTLE_USER": "off",
    "GRACE_LLM_MAX_TOKENS": "16",
    "GRACE_LOCAL_MODEL_MAX_TOKENS": "16",
    "GRACE_LOCAL_MODEL_CONTEXT": "1024",
    "GRACE_TASKS_BACKEND": "django_tasks.backends.immediate.ImmediateBackend",
}


@pytest.fixture(scope="module")
def llama_grace(tmp_path_factory, llama_url: str) -> Iterator[GraceServer]:
    env = {**BASE_ENV, "GRACE_REPLY_BACKEND": "openai", "GRACE_LLM_URL": llama_url}
    with GraceServer(tmp_path_factory.mktemp("llama-grace"), env) as server:
        yield server


@pytest.fixture(scope="module")
def scripted() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture(scope="module")
def scripted_grace(tmp_path_factory, scripted: Upstream) -> Iterator[GraceServer]:
    env = {**BASE_ENV, "GRACE_REPLY_BACKEND": "openai", "GRACE_LLM_URL": scripted.url}
    with GraceServer(tmp_path_factory.mktemp("scripted-grace"), env) as server:
        yield server


def stream(client: httpx.Client, url: str, body: dict) -> tuple[httpx.Response, list[SSEEvent]]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    with client.stream("POST", f"{url}/api/chat/stream", json=body) as response:
        for data in response.iter_bytes():
            events += decoder.feed(data)
    return response, events + decoder.close()


def test_reply_streams_token_by_token(llama_grace: GraceServer) -> None:
    with httpx.Client(timeout=60) as client:
        # A reply of several tokens whatever the model samples ("Say hello." once came back
        # as two tokens).
        response, events = stream(
            client, llama_grace.url, {"message": "Count from one to ten, with commas."}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [json.loads(e.data) for e in events]
    kinds = [e.event for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"token"} and len(kinds) >= 5  # three token frames or more
    assert [f["type"] for f in frames] == kinds
    rid = response.headers["x-request-id"]
    assert {f["request_id"] for f in frames} == {rid}
    done = frames[-1]
    assert done["response"] == "".join(f["text"] for f in frames[1:-1])
    assert done["metadata"]["backend"] == "openai" and done["degraded"] is False
    assert frames[0]["conversation_id"] is None  # a new conversation: its ID comes in done


def test_errors_before_the_stream_are_json(llama_grace: GraceServer) -> None:
    with httpx.Client(timeout=30) as client:
        blank = client.post(f"{llama_grace.url}/api/chat/stream", json={"message": "  "})
        unknown = client.post(
            f"{llama_grace.url}/api/chat/stream",
            json={"message": "hi", "conversation_id": "6f1c6a3e-7d1e-4a4e-9a3e-1b2c3d4e5f60"},
        )
    for response in (blank, unknown):
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/json"
        assert response.json()["request_id"] == response.headers["x-request-id"]
    assert unknown.json()["details"][0]["field"] == "conversation_id"


def test_disconnect_stops_generation_and_stores_the_partial_reply(
    scripted: Upstream, scripted_grace: GraceServer
) -> None:
    words = [x for n in range(100) for x in (chunk(f"w{n} "), 0.05)]
    scripted.add(
        Scripted(body=sse(chunk("Hi", "stop"))),  # the first message
        Scripted(body=sse(chunk("Hello"), *words, chunk(None, "stop"))),  # the streamed one
    )
    with httpx.Client(timeout=30) as client:
        started = client.post(f"{scripted_grace.url}/api/chat/", json={"message": "hi"}).json()
        conversation = started["conversation_id"]
        decoder = SSEDecoder()
        tokens: list[str] = []
        body = {"message": "Tell me everything.", "conversation_id": conversation}
        with client.stream("POST", f"{scripted_grace.url}/api/chat/stream", json=body) as response:
            for data in response.iter_bytes():
                tokens += [
                    json.loads(e.data)["text"] for e in decoder.feed(data) if e.event == "token"
                ]
                if len(tokens) >= 3:
                    break  # leaving the block closes the connection mid-stream
        received = "".join(tokens)

        def both_replies() -> list[dict]:
            detail = client.get(f"{scripted_grace.url}/api/chat/conversations/{conversation}")
            messages = detail.json()["messages"]
            return messages if len(messages) == 4 else []

        messages = wait_until(both_replies, timeout=10, interval=0.1,
                              message="the partial reply stored")
    reply = messages[-1]
    assert reply["role"] == "assistant"
    assert "stopped" in reply["metadata"]["flags"]
    assert reply["content"].startswith(received)
    # Far from 100 words: at most about a second's worth (20 a second) after the disconnect.
    assert len(reply["content"]) < len("Hello") + int(20 * limit(1.0)) * len("w00 ")
    # The upstream notices at its next write or two.
    wait_until(lambda: scripted.aborted, timeout=3, message="the upstream saw its stream closed")
    assert scripted.aborted == 1  # Grace closed the upstream stream too


def test_local_model_through_the_stream(tmp_path: Path) -> None:
    env = {**BASE_ENV, "GRACE_REPLY_BACKEND": "local"}
    with GraceServer(tmp_path, env) as server, httpx.Client(timeout=60) as client:
        response, events = stream(client, server.url, {"message": "Say hello."})
        health = client.get(f"{server.url}/api/health")
    assert response.status_code == 200
    assert [e.event for e in events].count("token") > 1
    done = json.loads(events[-1].data)
    assert done["metadata"]["backend"] == "local" and done["degraded"] is False
    assert health.status_code == 200
