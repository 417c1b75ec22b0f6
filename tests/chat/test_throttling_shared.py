"""Throttles every process shares, counted atomically: in Redis (a Lua script) or in the
database (one upsert), never read-then-write. Concurrent requests against a limit of 10
let exactly 10 through; two real server processes give a caller exactly their rate."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from django.db import connection, connections

from chat import throttling
from chat.models import ThrottleBucket
from chat.throttling import Verdict, database_count, gcra, redis_count
from grace.cache import RedisCache

CONCURRENT = 40
RATE = "10/hour"  # one more every 6 minutes: nothing refills while a test runs


def concurrently(count: Callable[[], Verdict], n: int = CONCURRENT) -> list[Verdict]:
    """``n`` threads call ``count`` at the same moment (each with its own connection)."""
    start = threading.Barrier(n)

    def one(_: int) -> Verdict:
        start.wait()
        try:
            return count()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture
def redis_cache(redis_url: str) -> Iterator[RedisCache]:
    cache = RedisCache(redis_url, {"KEY_PREFIX": f"grace-test-{uuid.uuid4().hex[:8]}"})
    yield cache
    cache.clear()


@pytest.mark.django_db(transaction=True)
def test_database_counts_concurrent_requests_exactly():
    interval, tolerance = gcra(RATE)
    verdicts = concurrently(
        lambda: database_count("chat_user:race", interval_ms=interval, tolerance_ms=tolerance)
    )
    assert sum(v.allowed for v in verdicts) == 10, connection.vendor
    refused = [v for v in verdicts if not v.allowed]
    # A refused request reads the bucket after its own upsert: one whose clock was read
    # a moment before the last allowed request's may still see that last place free a few
    # ms away (Retry-After 1 s); none waits longer than the refill.
    assert all(0 <= v.wait <= 361 for v in refused), [v.wait for v in refused][:3]
    # The next request is 6 minutes away (refused ones were not counted).
    after = database_count("chat_user:race", interval_ms=interval, tolerance_ms=tolerance)
    assert not after.allowed and 300 <= after.wait <= 361, after
    assert ThrottleBucket.objects.filter(bucket="chat_user:race").count() == 1


def test_redis_counts_concurrent_requests_exactly(redis_cache):
    interval, tolerance = gcra(RATE)
    verdicts = concurrently(
        lambda: redis_count(
            redis_cache, "chat_user:race", interval_ms=interval, tolerance_ms=tolerance
        )
    )
    assert sum(v.allowed for v in verdicts) == 10
    assert all(300 <= v.wait <= 361 for v in verdicts if not v.allowed)
    client = redis_cache._cache.get_client(None, write=True)
    key = redis_cache.make_and_validate_key("throttle:chat_user:race")
    # The key expires by itself when the bucket is full again (10 x 6 minutes).
    assert 0 < client.pttl(key) <= 3600 * 1000


def test_redis_clear_keeps_the_channel_layers_keys(redis_cache):
    """The Redis database is shared with channels-redis: clearing the cache (tests do it
    before each test) must not drop websocket groups."""
    client = redis_cache._cache.get_client(None, write=True)
    other = f"asgi:test-{uuid.uuid4().hex}"
    client.set(other, "1", ex=60)
    redis_cache.set("mine", 1)
    redis_cache.clear()
    assert redis_cache.get("mine") is None
    assert client.get(other) == b"1"
    client.delete(other)


@pytest.mark.django_db(transaction=True)
def test_gcra_refills_one_request_per_interval():
    """``2/2s``: two at once, then one a second; a refused request is not counted."""
    interval, tolerance = gcra("2/2s")
    assert (interval, tolerance) == (1000, 1000)

    def count() -> Verdict:
        return database_count("chat_anon:refill", interval_ms=interval, tolerance_ms=tolerance)

    assert [count().allowed for _ in range(3)] == [True, True, False]
    refused = count()
    assert not refused.allowed and 0 < refused.wait <= 1.0
    time.sleep(refused.wait + 0.05)
    assert count().allowed
    assert not count().allowed


@pytest.mark.django_db(transaction=True)
def test_buckets_whose_time_has_passed_are_deleted_on_the_way(monkeypatch):
    now_ms = int(time.time() * 1000)
    ThrottleBucket.objects.bulk_create(
        ThrottleBucket(bucket=f"chat_anon:10.0.0.{i}", tat=now_ms - 1000) for i in range(50)
    )
    ThrottleBucket.objects.create(bucket="chat_anon:busy", tat=now_ms + 600_000)
    monkeypatch.setattr(throttling, "_cleaned_at", 0.0)
    interval, tolerance = gcra(RATE)
    assert database_count("chat_anon:new", interval_ms=interval, tolerance_ms=tolerance).allowed
    assert sorted(ThrottleBucket.objects.values_list("bucket", flat=True)) == [
        "chat_anon:busy",
        "chat_anon:new",
    ]


# --- Two real server processes ---------------------------------------------------------


def _hammer(urls: list[str], total: int) -> list[httpx.Response]:
    """``total`` anonymous requests at once, spread over the servers (one client IP)."""

    def one(i: int) -> httpx.Response:
        return httpx.get(f"{urls[i % len(urls)]}/api/chat/conversations", timeout=30)

    with ThreadPoolExecutor(max_workers=10) as pool:
        return list(pool.map(one, range(total)))


@pytest.fixture(params=["database", "redis"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    env = {"GRACE_ALLOW_ANONYMOUS": "true", "GRACE_THROTTLE_ANON": RATE}
    if request.param == "database":
        return {**env, "REDIS_URL": ""}
    redis_url = request.getfixturevalue("redis_url")
    # A database of its own, so that no other test run shares the servers' counts, emptied
    # first: a count left there by an earlier run (10/hour frees a slot every 6 minutes)
    # would still be counting against this one.
    own = redis_url.rsplit("/", 1)[0] + f"/{random.randint(2, 15)}"
    redis.Redis.from_url(own).flushdb()
    return {**env, "REDIS_URL": own}


@pytest.mark.slow
def test_two_server_processes_give_a_caller_exactly_their_rate(grace_server, store_env):
    with grace_server(store_env) as first, grace_server(store_env, migrate_first=False) as second:
        responses = _hammer([first.url, second.url], 30)
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 10, statuses
        assert statuses.count(429) == 20, statuses
        served = {r.request.url.port for r in responses if r.status_code == 200}
        assert served == {first.port, second.port}, "both processes answered"
        for refused in (r for r in responses if r.status_code == 429):
            assert 300 <= int(refused.headers["Retry-After"]) <= 360
            assert refused.json()["error"] == "rate_limited"
