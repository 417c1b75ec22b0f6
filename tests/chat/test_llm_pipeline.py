"""The chat pipeline with a real model server behind it: what the model receives, what the
user gets back when the model answers, and when it does not."""

from __future__ import annotations

import json

import pytest

from chat.models import Message
from tests.chat.conftest import post_chat
from tests.chat.llm_fixtures import Scripted, Upstream, chunk, sse

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def real_fallback(settings) -> None:
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "REPLY_BACKENDS": {
            **settings.GRACE_CHAT["REPLY_BACKENDS"],
            "fallback": {"BACKEND": "chat.backends.fallback.FallbackBackend", "OPTIONS": {}},
        },
    }


async def test_redacted_text_never_reaches_the_model(
    seeded, client, upstream: Upstream, use_backends, settings
) -> None:
    use_backends("openai", URL=upstream.url)
    upstream.add(
        Scripted(body=sse(chunk("Rotate it.", "stop"))),
        Scripted(
            body=[b'{"choices": [{"message": {"content": "Done."}, "finish_reason": "stop"}]}'],
            chunked=False,
        ),
    )
    first = (await post_chat(client, {"message": f"I pasted {AWS_KEY} by mistake"})).json()
    assert first["metadata"]["stages"]["inspect"] == "redacted"
    assert first["response"] == "Rotate it." and first["metadata"]["backend"] == "primary"
    second = await post_chat(
        client, {"message": "What now?", "conversation_id": first["conversation_id"]}
    )
    assert second.status_code == 200
    received = json.dumps(upstream.requests)
    assert AWS_KEY not in received
    messages = upstream.requests[-1]["json"]["messages"]
    assert "[REDACTED:secret]" in messages[-3]["content"]  # the first message, as history
    assert messages[-2] == {"role": "assistant", "content": "Rotate it."}
    assert messages[-1] == {"role": "user", "content": "What now?"}


async def test_the_model_answers(seeded, client, llama_url: str, use_backends, settings) -> None:
    use_backends("openai", URL=llama_url, MAX_TOKENS=16)
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "PIPELINE_DEADLINE": 20.0,  # time enough on a busy 2-core machine
        "STAGE_TIMEOUTS": {**settings.GRACE_CHAT["STAGE_TIMEOUTS"], "respond": 15.0},
    }
    body = (await post_chat(client, {"message": "Say hello."})).json()
    assert body["degraded"] is False
    assert body["metadata"]["backend"] == "primary"
    assert body["metadata"]["flags"] == []
    stored = await Message.objects.aget(role="assistant")
    assert stored.content == body["response"] and stored.content.strip()
    assert stored.metadata["model"] == "SmolLM2-135M-Instruct.Q4_1"


async def test_model_error_falls_back(
    seeded, client, upstream: Upstream, use_backends, settings
) -> None:
    use_backends("openai", URL=upstream.url)
    real_fallback(settings)
    upstream.add(Scripted(status=401, body=[b'{"error": {"message": "bad key"}}'], chunked=False))
    response = await post_chat(client, {"message": "hello"})
    body = response.json()
    assert response.status_code == 200 and body["degraded"] is True
    assert {"llm_error", "response_fallback"} <= set(body["metadata"]["flags"])
    assert body["metadata"]["backend"] == "fallback"
    assert body["response"]  # the deterministic fallback's greeting
    assert len(upstream.requests) == 1


async def test_model_too_slow_falls_back_within_the_deadline(
    seeded, client, upstream: Upstream, use_backends, settings
) -> None:
    use_backends("openai", URL=upstream.url)
    real_fallback(settings)
    upstream.add(Scripted(body=[5.0, *sse(chunk("late", "stop"))]))
    response = await post_chat(client, {"message": "hello"})
    body = response.json()
    assert {"llm_timeout", "response_fallback"} <= set(body["metadata"]["flags"])
    assert body["metadata"]["backend"] == "fallback"
    assert body["metadata"]["duration_ms"] < 3000  # the pipeline deadline of chat_config
