"""Memory: the resident memory of a server after 20,000 chats is within 5 % of what it was
after 2,000.

One daphne process on fresh SQLite files, started as ``bin/run.py`` starts it (on jemalloc,
grace/allocator.py), the fallback backend and the whole pipeline (inspect, recall,
respond, store, followup: two tasks enqueued per reply, the queue bound raised so that none
is refused). The chats go over 32 websockets (``/ws/chat/``, one API token), the cheapest
full exchange the server offers; every tenth turn of a socket starts a new conversation.
RSS is read from /proc after 2,000 exchanges (everything warm: caches, connections,
thread pools) and again after 20,000, each time after the same short pause.

On glibc's malloc the same run grows 1.09-1.12x: free space fragmented inside malloc's
arenas, not objects kept per chat (README, "Memory"); ``GRACE_MALLOC=system`` measures that.
Without jemalloc the test is skipped (failed in CI); on the system allocator it is an
expected failure above the goal. Above 1.25x it fails either way: that is a leak.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time

import pytest
import websockets

from grace.allocator import allocator_in_use, jemalloc_path, preload_vars
from tests.conftest import service_unavailable
from tests.scale.support import NO_THROTTLE, api_token, rss_kib

pytestmark = pytest.mark.slow

GOAL = 1.05  # the bound
LEAK = 1.25  # beyond this it is a leak, not caches filling (see the README)
WARM = 2_000
TOTAL = 20_000
SOCKETS = 32
PAUSE = 2.0  # seconds idle before each reading (jemalloc returns freed pages on a timer)
MESSAGES = ["Hello!", "How do I run the executor worker?", "What is the capital of Mongolia?",
            "What did I say?", "Thanks!"]


async def exchanges(url: str, origin: str, token: str, count: int) -> dict[str, int]:
    """``count`` chat exchanges over SOCKETS websockets; frame types of the last frames."""
    ticket = itertools.count()
    outcomes: dict[str, int] = {}

    async def socket(index: int) -> None:
        async with websockets.connect(url, origin=origin, subprotocols=["grace.v1"],
                                      additional_headers={"Authorization": f"Bearer {token}"},
                                      max_size=2**22) as ws:
            conversation = None
            while (n := next(ticket)) < count:
                if n % 10 == 0:
                    conversation = None
                await ws.send(json.dumps({"type": "message", "conversation_id": conversation,
                                          "message": MESSAGES[(index + n) % len(MESSAGES)]}))
                while (frame := json.loads(await ws.recv()))["type"] not in ("done", "error"):
                    pass
                outcomes[frame["type"]] = outcomes.get(frame["type"], 0) + 1
                if frame["type"] == "done":
                    conversation = frame["conversation_id"]

    await asyncio.gather(*(socket(i) for i in range(SOCKETS)))
    return outcomes


@pytest.mark.timeout(900)
def test_resident_memory_after_20000_chats_is_within_5_percent_of_2000(grace_server) -> None:
    system = os.environ.get("GRACE_MALLOC", "").lower() == "system"
    if not system and jemalloc_path() is None:
        service_unavailable("jemalloc is not installed (Debian: libjemalloc2); "
                            "GRACE_MALLOC=system measures glibc's malloc")
    env = {**NO_THROTTLE, "GRACE_LOG_LEVEL": "WARNING", "GRACE_ACCESS_LOG": "false",
           "GRACE_EXECUTOR_MAX_PENDING": str(3 * TOTAL), **preload_vars()}
    with grace_server(env) as server:
        token = api_token(server.env, "memory")
        url = server.url.replace("http://", "ws://") + "/ws/chat/"
        assert server.proc is not None
        started = time.monotonic()
        malloc = allocator_in_use(server.proc.pid)
        assert malloc == ("system" if system else "jemalloc")
        warm = asyncio.run(exchanges(url, server.url, token, WARM))
        time.sleep(PAUSE)
        after_warm = rss_kib(server.proc.pid)
        warm_seconds = time.monotonic() - started
        rest = asyncio.run(exchanges(url, server.url, token, TOTAL - WARM))
        time.sleep(PAUSE)
        after_all = rss_kib(server.proc.pid)
        elapsed = time.monotonic() - started
    assert warm == {"done": WARM} and rest == {"done": TOTAL - WARM}, (warm, rest)
    ratio = after_all / after_warm
    print(json.dumps({"malloc": malloc, "rss_after_2000_kib": after_warm,
                      "rss_after_20000_kib": after_all, "ratio": round(ratio, 4),
                      "seconds": round(elapsed, 1),
                      "warm_seconds": round(warm_seconds, 1),
                      "exchanges_per_s": round(TOTAL / elapsed, 1)}))
    # A leak of a few KiB per chat would pass 1.25x: that fails outright.
    assert ratio <= LEAK, f"RSS grew from {after_warm} to {after_all} KiB ({ratio:.3f}x)"
    assert ratio <= GOAL or system, (
        f"RSS grew from {after_warm} to {after_all} KiB ({ratio:.3f}x > {GOAL}x) on {malloc}")
    if system and ratio > GOAL:
        pytest.xfail(f"goal missed on the system malloc: RSS {after_warm} -> {after_all} KiB"
                     f" ({ratio:.3f}x > {GOAL}x); see the README's Memory section")
