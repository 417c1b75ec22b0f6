"""The circuit breaker: opening after N failures, answering at once, one probe deciding."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from chat.backends.base import ReplyRequest
from chat.backends.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, breaker_get
from chat.backends.respond import reply_generate
from chat.backends.usage import usage_snapshot
from tests.chat.llm_fixtures import FALLBACK_TEXT, Scripted, Upstream, chunk, sse
from tests.timing import limit, wait_until_async

ASK = ReplyRequest(message="hello", max_tokens=8)
FAIL = Scripted(status=500, body=[b'{"error": "boom"}'], chunked=False)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", failures=3, reset_seconds=10, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # not consecutive any more
    breaker.failure()
    breaker.failure()
    assert breaker.allow() and breaker.state == CLOSED
    breaker.failure()
    assert breaker.state == OPEN
    assert not breaker.allow()


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", failures=1, reset_seconds=10, clock=clock)
    breaker.failure()
    clock.now += 10
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else meanwhile
    breaker.failure()  # the probe failed: open again for a full period
    assert breaker.state == OPEN
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED
    assert breaker.allow() and breaker.allow()


def test_cancelled_probe_decides_nothing() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", failures=1, reset_seconds=1, clock=clock)
    breaker.failure()
    clock.now += 1
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()  # the next caller probes


def test_one_probe_among_many_threads() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", failures=1, reset_seconds=1, clock=clock)
    breaker.failure()
    clock.now += 1
    allowed: list[bool] = []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        allowed.append(breaker.allow())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(allowed) == [False] * 7 + [True]


@pytest.mark.slow
async def test_breaker_opens_and_recovers(upstream: Upstream, use_backends, settings) -> None:
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "BREAKER_FAILURES": 2,
        "BREAKER_RESET_SECONDS": limit(0.5),  # longer than the "at once" below
    }
    use_backends("openai", URL=upstream.url, RETRIES=0)
    upstream.add(FAIL, FAIL)
    for _ in range(2):
        reply = await reply_generate(request=ASK, timeout=2)
        assert reply.flags == ["llm_error", "response_fallback"]
    assert len(upstream.requests) == 2

    started = time.monotonic()
    reply = await reply_generate(request=ASK, timeout=2)
    assert time.monotonic() - started < limit(0.5)  # answered at once, upstream not asked
    assert reply.flags == ["circuit_open", "response_fallback"]
    assert reply.result.text == FALLBACK_TEXT
    assert len(upstream.requests) == 2
    assert usage_snapshot()["primary"]["statuses"]["circuit_open"] >= 1

    await half_open()
    upstream.add(FAIL)  # the probe fails: open again
    reply = await reply_generate(request=ASK, timeout=2)
    assert reply.flags == ["llm_error", "response_fallback"]
    assert len(upstream.requests) == 3
    reply = await reply_generate(request=ASK, timeout=2)
    assert reply.flags == ["circuit_open", "response_fallback"]
    assert len(upstream.requests) == 3

    await half_open()
    upstream.add(*[Scripted(body=sse(chunk("Back", "stop")))] * 3)
    for _ in range(3):  # the probe succeeds: closed, every call goes upstream
        reply = await reply_generate(request=ASK, timeout=2, on_token=_ignore)
        assert reply.flags == []
        assert reply.result.text == "Back"
    assert len(upstream.requests) == 6
    assert breaker_get("primary").state == CLOSED


@pytest.mark.slow
async def test_while_the_probe_runs_others_get_the_fallback(
    upstream: Upstream, use_backends, settings
) -> None:
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "BREAKER_FAILURES": 1,
        "BREAKER_RESET_SECONDS": 0.2,
    }
    use_backends("openai", URL=upstream.url, RETRIES=0)
    upstream.add(FAIL, Scripted(body=[0.5, *sse(chunk("Slow probe", "stop"))]))
    await reply_generate(request=ASK, timeout=2)
    await half_open()
    probe = asyncio.create_task(reply_generate(request=ASK, timeout=3, on_token=_ignore))
    await wait_until_async(lambda: len(upstream.requests) == 2, timeout=5,
                           message="the probe reached the upstream")
    other = await reply_generate(request=ASK, timeout=3)
    assert other.flags == ["circuit_open", "response_fallback"]
    assert (await probe).result.text == "Slow probe"
    assert len(upstream.requests) == 2


async def _ignore(piece: str) -> None:
    pass


async def half_open() -> None:
    """Wait until the primary's breaker lets a probe through (its reset time is over)."""
    await wait_until_async(lambda: breaker_get("primary").state == HALF_OPEN, timeout=5,
                           message="the breaker half-open")
