"""reply_generate: who answers, with which flags, within which time; usage recorded."""

from __future__ import annotations

import asyncio
import time

import pytest

from chat.backends.base import ReplyBackend, ReplyRequest, ReplyResult, deadline_remaining
from chat.backends.breaker import CLOSED, breaker_get
from chat.backends.respond import APOLOGY, reply_generate
from chat.backends.usage import usage_reset, usage_snapshot, usage_subscribe
from tests.chat.llm_fixtures import FALLBACK_TEXT, Scripted, Upstream, chunk, sse
from tests.timing import limit, wait_until_async

ASK = ReplyRequest(message="hello", max_tokens=8, request_id="req-1")


class Broken(ReplyBackend):
    """A backend with a bug: it raises something that is not a ReplyBackendError."""

    async def generate(self, request, *, on_token=None) -> ReplyResult:
        raise KeyError("oops")


class Patient(ReplyBackend):
    """Reports how much time the caller gave it."""

    async def generate(self, request, *, on_token=None) -> ReplyResult:
        return ReplyResult(text=f"{deadline_remaining():.2f}", backend=self.alias)


async def test_fallback_only(use_backends) -> None:
    use_backends("fallback")
    reply = await reply_generate(request=ASK)
    assert reply.flags == []
    assert reply.result.text == FALLBACK_TEXT and reply.result.backend == "fallback"


async def test_unavailable_primary(use_backends) -> None:
    use_backends("openai", URL="")
    reply = await reply_generate(request=ASK)
    assert reply.flags == ["response_fallback"]
    assert reply.result.backend == "fallback"


async def test_a_buggy_backend_is_an_llm_error(use_backends, settings) -> None:
    use_backends("fallback")
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "REPLY_BACKENDS": {
            **settings.GRACE_CHAT["REPLY_BACKENDS"],
            "broken": {"BACKEND": "tests.chat.test_backend_respond.Broken"},
        },
        "REPLY_BACKEND": "broken",
    }
    reply = await reply_generate(request=ASK)
    assert reply.flags == ["llm_error", "response_fallback"]
    assert reply.result.text == FALLBACK_TEXT


async def test_without_the_primary_the_fallback_answers_unflagged(use_backends, settings) -> None:
    use_backends("fallback")
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "REPLY_BACKENDS": {
            **settings.GRACE_CHAT["REPLY_BACKENDS"],
            "broken": {"BACKEND": "tests.chat.test_backend_respond.Broken"},
        },
        "REPLY_BACKEND": "broken",
    }
    reply = await reply_generate(request=ASK, use_primary=False)
    assert reply.flags == []  # the caller's own failure flag says why
    assert reply.result.text == FALLBACK_TEXT


async def test_a_failing_fallback_leaves_the_apology(use_backends, settings) -> None:
    use_backends("openai", URL="")
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "REPLY_BACKENDS": {
            **settings.GRACE_CHAT["REPLY_BACKENDS"],
            "fallback": {"BACKEND": "tests.chat.test_backend_respond.Broken"},
        },
    }
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    reply = await reply_generate(request=ASK, on_token=on_token)
    assert reply.flags == ["response_fallback", "fallback_failed"]
    assert reply.result.text == APOLOGY and reply.result.backend == "none"
    assert pieces == []


async def test_backends_see_the_deadline_less_the_fallback_reserve(use_backends, settings) -> None:
    use_backends("fallback")
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "REPLY_BACKENDS": {
            **settings.GRACE_CHAT["REPLY_BACKENDS"],
            "patient": {"BACKEND": "tests.chat.test_backend_respond.Patient"},
        },
        "REPLY_BACKEND": "patient",
        "REPLY_FALLBACK_RESERVE": 0.5,
    }
    reply = await reply_generate(request=ASK, timeout=3)
    assert 2.5 - limit(0.1) <= float(reply.result.text) <= 2.5  # less what it took to start


@pytest.mark.slow
async def test_token_callback_errors_propagate(upstream: Upstream, use_backends) -> None:
    upstream.add(Scripted(body=sse(chunk("Hi"), chunk(" there", "stop"))))
    use_backends("openai", URL=upstream.url)

    class Gone(Exception):
        pass

    async def on_token(piece: str) -> None:
        raise Gone

    with pytest.raises(Gone):
        await reply_generate(request=ASK, on_token=on_token)
    assert breaker_get("primary").state == CLOSED


@pytest.mark.slow
async def test_cancelling_stops_the_upstream_stream(upstream: Upstream, use_backends) -> None:
    """A client that goes away: the task is cancelled, the upstream connection closed."""
    trickle = sse(*[x for _ in range(50) for x in (chunk("word "), 0.05)])
    upstream.add(Scripted(body=trickle))
    use_backends("openai", URL=upstream.url)
    usage_reset()
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    task = asyncio.create_task(reply_generate(request=ASK, on_token=on_token, timeout=10))
    await wait_until_async(lambda: len(pieces) >= 3, timeout=5, message="3 pieces streamed")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(pieces)
    # The upstream, still writing a piece every 50 ms, finds the connection closed.
    await wait_until_async(lambda: upstream.aborted == 1, timeout=5,
                           message="the upstream saw its stream closed")
    assert len(pieces) == count
    assert usage_snapshot()["primary"]["statuses"] == {"stopped": 1}


@pytest.mark.slow
async def test_usage_is_recorded_per_backend(llama_url: str, use_backends) -> None:
    use_backends("openai", URL=llama_url)
    usage_reset()
    events = []
    unsubscribe = usage_subscribe(events.append)
    try:
        started = time.monotonic()
        reply = await reply_generate(request=ASK, timeout=10)
        elapsed_ms = (time.monotonic() - started) * 1000
    finally:
        unsubscribe()
    totals = usage_snapshot()["primary"]
    assert totals["calls"] == 1 and totals["statuses"] == {"ok": 1}
    assert totals["completion_tokens"] == reply.result.usage["completion_tokens"] > 0
    assert totals["prompt_tokens"] > 0
    assert 0 < totals["recent_latency_ms"][0] <= elapsed_ms + 1
    assert [(e.backend, e.status, e.request_id) for e in events] == [("primary", "ok", "req-1")]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "'nope' is not configured"),
        ({"BACKEND": "chat.backends.missing.Backend"}, "could not be loaded"),
        ({"BACKEND": "chat.backends.base.ReplyRequest"}, "is not a ReplyBackend subclass"),
    ],
)
def test_backends_that_cannot_load_are_improperly_configured(settings, config, message) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from chat.backends import reply_backend_get

    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "REPLY_BACKENDS": {"nope": config} if config else {},
    }
    with pytest.raises(ImproperlyConfigured, match=message):
        reply_backend_get("nope")
