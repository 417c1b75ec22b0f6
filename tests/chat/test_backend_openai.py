"""The OpenAI-compatible backend against real servers: llama.cpp's own, and a scripted one."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from chat.backends import reply_backend_primary
from chat.backends.base import (
    KnowledgeHit,
    ReplyBackendFailed,
    ReplyBackendTimeout,
    ReplyBackendUnavailable,
    ReplyRequest,
)
from chat.backends.openai import OpenAIBackend, retry_after_seconds
from chat.backends.respond import reply_generate
from tests.chat.llm_fixtures import FALLBACK_TEXT, Scripted, Upstream, chunk, sse
from tests.timing import limit

ASK = ReplyRequest(message="Say hello in one short sentence.", max_tokens=16)


def backend(url: str, **options) -> OpenAIBackend:
    return OpenAIBackend("openai", {"URL": url, "RETRY_BACKOFF": 0.01, **options})


@pytest.mark.slow
async def test_reply_from_llama_cpp(llama_url: str) -> None:
    result = await backend(llama_url).generate(ASK)
    assert result.text.strip()
    assert result.backend == "openai"
    assert result.usage["completion_tokens"] <= 16
    assert result.usage["prompt_tokens"] > 0
    assert result.finish_reason in {"stop", "length"}


@pytest.mark.slow
async def test_streamed_reply_from_llama_cpp(llama_url: str) -> None:
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    result = await backend(llama_url).generate(ASK, on_token=on_token)
    assert len(pieces) > 1
    assert "".join(pieces) == result.text
    assert 0 < result.usage["completion_tokens"] <= 16
    assert result.first_token_ms is not None and result.first_token_ms <= result.latency_ms


@pytest.mark.slow
async def test_reply_generate_uses_the_model(llama_url: str, use_backends) -> None:
    use_backends("openai", URL=llama_url)
    reply = await reply_generate(request=ASK, timeout=20)
    assert reply.flags == []
    assert reply.result.backend == "primary"
    assert reply.result.text and reply.result.text != FALLBACK_TEXT


@pytest.mark.slow
async def test_deadline_too_small_for_the_model(llama_url: str, use_backends) -> None:
    """A long reply cannot finish in 0.4 s: the fallback answers within the deadline."""
    use_backends("openai", URL=llama_url)
    request = ReplyRequest(message="Write a very long story about a dragon.", max_tokens=600)
    started = time.monotonic()
    reply = await reply_generate(request=request, timeout=0.4)
    elapsed = time.monotonic() - started
    assert reply.flags == ["llm_timeout", "response_fallback"]
    assert reply.result.text == FALLBACK_TEXT
    assert reply.result.backend == "fallback"
    assert elapsed < 0.4 + limit(0.5)  # generous: a busy 2-core machine


@pytest.mark.slow
async def test_streamed_timeout_keeps_the_pieces_already_sent(
    upstream: Upstream, use_backends
) -> None:
    """A trickling stream never trips httpx's per-read timeout; our total deadline does."""
    trickle = sse(chunk("One"), 0.2, chunk(" two"), 0.2, *[chunk(" more"), 0.2] * 20)
    upstream.add(Scripted(body=[0.05, *trickle]))
    use_backends("openai", URL=upstream.url, READ_TIMEOUT=5)
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    started = time.monotonic()
    reply = await reply_generate(request=ASK, on_token=on_token, timeout=1.0)
    assert time.monotonic() - started < 1.0 + limit(0.5)
    assert reply.flags == ["llm_timeout", "response_truncated"]
    # What streamed, and as it ends mid-sentence, "…" says that it stops there.
    assert reply.result.text == "".join(pieces) + "…"
    assert reply.result.text.startswith("One two")


async def test_connection_refused_goes_to_fallback(use_backends) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(ReplyBackendUnavailable, match="cannot connect"):
            await backend(url).generate(ASK)
        use_backends("openai", URL=url, RETRY_BACKOFF=0.01)
        reply = await reply_generate(request=ASK, timeout=2)
    assert reply.flags == ["llm_error", "response_fallback"]
    assert reply.result.text == FALLBACK_TEXT


ERROR = b'{"error": {"message": "nope", "type": "invalid_request_error"}}'


@pytest.mark.slow
@pytest.mark.parametrize(
    ("status", "received"),
    [(400, 1), (401, 1), (403, 1), (404, 1), (500, 1), (502, 3), (503, 3), (504, 3)],
)
async def test_which_statuses_are_retried(upstream: Upstream, status: int, received: int) -> None:
    upstream.add(*[Scripted(status=status, body=[ERROR], chunked=False)] * 3)
    with pytest.raises(ReplyBackendFailed, match=f"upstream answered {status}: nope"):
        await backend(upstream.url, RETRIES=2).generate(ASK)
    assert len(upstream.requests) == received


@pytest.mark.slow
async def test_retry_then_success(upstream: Upstream) -> None:
    upstream.add(
        Scripted(status=503, body=[ERROR], chunked=False),
        Scripted(body=sse(chunk("Hi", "stop"))),
    )
    result = await backend(upstream.url).generate(ASK, on_token=_ignore)
    assert result.text == "Hi"
    assert len(upstream.requests) == 2


@pytest.mark.slow
async def test_429_waits_for_retry_after(upstream: Upstream) -> None:
    upstream.add(
        Scripted(status=429, headers={"Retry-After": "0.3"}, body=[ERROR], chunked=False),
        Scripted(body=sse(chunk("Hi", "stop"))),
    )
    started = time.monotonic()
    result = await backend(upstream.url).generate(ASK, on_token=_ignore)
    assert result.text == "Hi"
    assert time.monotonic() - started >= 0.3
    assert len(upstream.requests) == 2


@pytest.mark.slow
async def test_429_beyond_the_deadline_fails_at_once(upstream: Upstream, use_backends) -> None:
    upstream.add(Scripted(status=429, headers={"Retry-After": "30"}, body=[ERROR], chunked=False))
    use_backends("openai", URL=upstream.url)
    started = time.monotonic()
    reply = await reply_generate(request=ASK, timeout=3)
    assert time.monotonic() - started < limit(1.0)  # not the 30 s, nor the 3 s deadline
    assert reply.flags == ["llm_error", "response_fallback"]
    assert len(upstream.requests) == 1


def test_retry_after_forms() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


async def _ignore(piece: str) -> None:
    pass


@pytest.mark.slow
async def test_split_frames_keepalives_usage_and_no_done(upstream: Upstream) -> None:
    raw = b"".join(
        p
        for p in sse(
            chunk(None),
            chunk("Hel"),
            chunk("lo \u00e9\U0001f600"),
            chunk(None, "stop"),
            {
                "model": "scripted",
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3},
            },
            done=False,
        )
        if isinstance(p, bytes)
    ).replace(b"\n\n", b"\r\n: keep-alive\r\n\r\n")
    pieces: list[bytes | float] = []
    for i in range(0, len(raw), 7):  # 7-byte network writes, split inside frames and UTF-8
        pieces += [raw[i : i + 7], 0.001]
    upstream.add(Scripted(body=pieces))
    got: list[str] = []

    async def on_token(piece: str) -> None:
        got.append(piece)

    result = await backend(upstream.url).generate(ASK, on_token=on_token)
    assert result.text == "Hello \u00e9\U0001f600"
    assert got == ["Hel", "lo \u00e9\U0001f600"]
    assert result.usage == {"prompt_tokens": 9, "completion_tokens": 3}
    assert result.finish_reason == "stop"
    assert result.model == "scripted"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (sse(chunk("Hi"), "{not json"), "malformed stream event"),
        (sse(chunk("Hi"), "[1, 2]"), "malformed stream event"),
        (sse(chunk("Hi"), done=False), "stream ended before the reply was complete"),
        (sse(chunk("Hi"), {"error": {"message": "model crashed"}}), "model crashed"),
        ([b'event: error\ndata: {"message": "overloaded"}\n\n'], "overloaded"),
    ],
    ids=["garbage-json", "not-an-object", "no-done-no-finish", "error-chunk", "error-event"],
)
async def test_malformed_streams_fail_clearly(upstream: Upstream, body, message: str) -> None:
    upstream.add(Scripted(body=body))
    with pytest.raises(ReplyBackendFailed, match=message):
        await backend(upstream.url).generate(ASK, on_token=_ignore)
    assert len(upstream.requests) == 1


@pytest.mark.slow
async def test_malformed_json_answer(upstream: Upstream) -> None:
    upstream.add(Scripted(body=[b'{"choices": []}'], chunked=False))
    with pytest.raises(ReplyBackendFailed, match="malformed answer"):
        await backend(upstream.url).generate(ASK)


@pytest.mark.slow
async def test_per_read_timeout_is_a_timeout(upstream: Upstream) -> None:
    upstream.add(Scripted(body=[*sse(chunk("Hi"), done=False), 1.0, *sse(chunk(None, "stop"))]))
    with pytest.raises(ReplyBackendTimeout):
        await backend(upstream.url, READ_TIMEOUT=0.3).generate(ASK, on_token=_ignore)


@pytest.mark.slow
async def test_what_the_upstream_receives(upstream: Upstream) -> None:
    """The message as given (already redacted), the domain prompt, knowledge, bounded history."""
    upstream.add(Scripted(body=sse(chunk("ok", "stop"))))
    history = [
        {"role": "user" if i % 2 else "assistant", "content": f"turn {i}"} for i in range(20)
    ]
    request = ReplyRequest(
        message="My key is [REDACTED], what now?",
        domain="security",
        history=history,
        knowledge=[KnowledgeHit(title="Rotating keys", body="Revoke, then reissue.")],
        max_tokens=8,
    )
    await backend(upstream.url, MODEL="m1", API_KEY="k-123").generate(request, on_token=_ignore)
    sent = upstream.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer k-123"
    body = sent["json"]
    assert body["model"] == "m1" and body["max_tokens"] == 8 and body["stream"] is True
    messages = body["messages"]
    assert messages[-1] == {"role": "user", "content": "My key is [REDACTED], what now?"}
    assert messages[0]["role"] == "system"
    assert "security" in messages[0]["content"]
    assert "Rotating keys" in messages[0]["content"]
    assert messages[1:-1] == history[-8:]


@pytest.mark.slow
async def test_one_pooled_client_per_event_loop(upstream: Upstream) -> None:
    upstream.add(*[Scripted(body=sse(chunk("ok", "stop")))] * 3)
    client = backend(upstream.url)
    first = client.client()
    assert client.client() is first
    await client.generate(ASK, on_token=_ignore)

    def other_loop() -> object:
        async def run() -> object:
            await client.generate(ASK, on_token=_ignore)
            used = client.client()
            await client.aclose()
            return used

        return asyncio.run(run())

    other = await asyncio.to_thread(other_loop)
    assert other is not first
    await client.generate(ASK, on_token=_ignore)
    assert client.client() is first
    assert len(upstream.requests) == 3
    await client.aclose()


async def test_configured_from_settings(settings) -> None:
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "REPLY_BACKEND": "openai"}
    primary = reply_backend_primary()
    assert isinstance(primary, OpenAIBackend)
    options = settings.GRACE_CHAT["REPLY_BACKENDS"]["openai"]["OPTIONS"]
    assert primary.url == options["URL"].rstrip("/")


@pytest.mark.slow
async def test_connections_are_reused_after_a_streamed_reply(upstream: Upstream) -> None:
    upstream.add(*[Scripted(body=sse(chunk("ok", "stop")))] * 2)
    openai = backend(upstream.url)
    for _ in range(2):
        assert (await openai.generate(ASK, on_token=_ignore)).text == "ok"
    assert upstream.requests[0]["peer"] == upstream.requests[1]["peer"]
    await openai.aclose()


@pytest.mark.slow
async def test_a_stream_left_open_after_done_is_closed(upstream: Upstream) -> None:
    upstream.add(Scripted(body=[*sse(chunk("ok", "stop")), 3.0]))
    started = time.monotonic()
    assert (await backend(upstream.url).generate(ASK, on_token=_ignore)).text == "ok"
    assert time.monotonic() - started < limit(1.5)  # not the 3 s the upstream stays open


@pytest.mark.slow
async def test_a_reply_cut_by_the_deadline_ends_at_its_last_sentence(
    upstream: Upstream, use_backends
) -> None:
    trickle = sse(
        chunk("The refund takes 5 days."), chunk(" It is paid"), 0.2, *[chunk(" to the"), 0.2] * 20
    )
    upstream.add(Scripted(body=[0.05, *trickle]))
    use_backends("openai", URL=upstream.url, READ_TIMEOUT=5)
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    reply = await reply_generate(request=ASK, on_token=on_token, timeout=1.0)
    assert reply.flags == ["llm_timeout", "response_truncated"]
    assert "".join(pieces).startswith("The refund takes 5 days. It is paid to the")
    assert reply.result.text == "The refund takes 5 days."


async def test_knowledge_goes_in_the_prompt_and_the_cited_entries_are_the_sources(
    upstream: Upstream,
) -> None:
    refunds = KnowledgeHit("Refunds", "The refund is paid within 5 working days.", 0.8, 1, "r.md")
    hours = KnowledgeHit("Opening hours", "Open 9:00 to 19:00.", 0.4, 2, "h.md")
    upstream.add(Scripted(body=sse(chunk("Within 5 working days [1]."), chunk(finish="stop"))))
    request = ReplyRequest(message="When is my money back?", knowledge=[refunds, hours])
    result = await backend(upstream.url).generate(request, on_token=_ignore)
    system = upstream.requests[-1]["json"]["messages"][0]["content"]
    assert "answer only from them" in system
    assert "[1] Refunds\nThe refund is paid within 5 working days." in system
    assert result.text == "Within 5 working days [1]."
    assert result.sources == [refunds]


async def _ignore(piece: str) -> None:
    pass
