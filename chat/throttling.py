"""Throttles of the chat API: per user (``GRACE_THROTTLE_USER``) for token and session
callers, per client IP (``GRACE_THROTTLE_ANON``) for anonymous ones.

Every process counts in one shared place, atomically, so N server processes give a
caller exactly their rate, and concurrent requests cannot slip through between a read
and a write:

- Redis (``REDIS_URL`` set, ``CACHES["default"]`` is a Redis cache): one Lua script per
  request, run atomically by Redis, with Redis's own clock; keys expire by themselves.
- otherwise the main database: one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE ...
  RETURNING`` per request (SQLite and PostgreSQL), on the ``chat.ThrottleBucket`` table;
  rows whose time has passed are deleted on the way (at most once a minute per process).

The rule is GCRA (a token bucket refilled continuously): a rate of ``N/period`` lets a
caller send N requests at once, then one more every ``period / N``. A refused request is
not counted. The state is one number per caller: the theoretical arrival time (TAT) of
their next request. The rate is read at each request, so settings changes apply at once;
``off`` disables a throttle. A throttled request is a 429 with ``Retry-After`` (seconds)
through grace/api.py, or an error frame on the websocket.

A database count runs in a throttle thread with its own connection (Django refuses
database calls on the event loop), waited for at most ``COUNT_TIMEOUT``. The chat API
and the websocket consumer await it (``throttles_count``: the event loop serves other
requests meanwhile): ninja's own throttle check is synchronous, so the chat router's
operations count right after authentication (``router_count_async``) and the check reads
the verdicts. Anything else calling ``allow_request`` on the event loop blocks the loop
for the count, as before. A store that fails or does not answer in time refuses the
request (429, retry in 1 s) and logs a warning: throttles never silently stop counting.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import DatabaseError, connections
from django.http import HttpRequest
from ninja import Router
from ninja.operation import AsyncOperation
from ninja.throttling import BaseThrottle

from chat.conf import RATE_OFF, chat_settings
from chat.models import ThrottleBucket

logger = logging.getLogger(__name__)

COUNT_TIMEOUT = 2.0
"""Seconds a request waits for its count before it is refused."""
CLEANUP_EVERY = 60.0
PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_local = threading.local()  # the last wait of this thread's throttle (ninja asks after)
COUNTED_ATTR = "_grace_throttle_verdicts"
"""On a request: the verdicts ``throttles_count`` awaited, by throttle scope."""


def rate_split(rate: str) -> tuple[int, float]:
    """``"30/min"`` -> (30, 60.0); ``"5/10s"`` -> (5, 10.0). (``chat.conf.rate_parse``
    has checked the form.)"""
    count, _, rest = rate.partition("/")
    digits = "".join(ch for ch in rest if ch.isdigit())
    unit = rest[len(digits) :][:1]
    return int(count), float(int(digits or 1) * PERIODS[unit])


def gcra(rate: str) -> tuple[int, int]:
    """The GCRA parameters of ``rate``, in ms: ``interval`` between requests once the
    bucket is empty, ``tolerance`` (how far ahead of now the next arrival time may run:
    ``limit - 1`` requests at once after the first)."""
    limit, period = rate_split(rate)
    interval_ms = max(1, round(period * 1000 / limit))
    return interval_ms, max(0, round(period * 1000) - interval_ms)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    wait: float = 0.0
    """Seconds until this caller may send again (refused requests only)."""


# --- Redis -----------------------------------------------------------------------------

# KEYS[1] the bucket; ARGV: interval and tolerance in ms. Returns {1, 0} or {0, wait_ms}.
# Numbers are written with %d: Lua's default formatting would round 13-digit times.
GCRA_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then return {0, tat - now - tolerance} end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX', string.format('%d', new - now))
return {1, 0}
"""
GCRA_SHA = hashlib.sha1(GCRA_LUA.encode()).hexdigest()  # noqa: S324 - Redis's script id


def _redis_client(cache: RedisCache) -> Any:
    """The redis-py client of Django's Redis cache (for what its API lacks: scripts)."""
    return cache._cache.get_client(None, write=True)  # type: ignore[attr-defined]


def redis_count(cache: RedisCache, bucket: str, *, interval_ms: int, tolerance_ms: int) -> Verdict:
    """One request against ``bucket`` in Redis, atomically (a Lua script)."""
    from redis.exceptions import NoScriptError

    key = cache.make_and_validate_key(f"throttle:{bucket}")
    client = _redis_client(cache)
    args = (interval_ms, tolerance_ms)
    try:
        allowed, wait_ms = client.evalsha(GCRA_SHA, 1, key, *args)
    except NoScriptError:
        allowed, wait_ms = client.eval(GCRA_LUA, 1, key, *args)
    return Verdict(bool(allowed), int(wait_ms) / 1000)


# --- Database --------------------------------------------------------------------------

_cleaned_at = 0.0
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def database_count(
    bucket: str, *, interval_ms: int, tolerance_ms: int, using: str = "default"
) -> Verdict:
    """One request against ``bucket`` in the database, atomically: a single upsert whose
    ``WHERE`` refuses the update when the bucket is empty (then no row comes back)."""
    table = ThrottleBucket._meta.db_table
    now = int(time.time() * 1000)
    connection = connections[using]
    sql = (
        f"INSERT INTO {table} (bucket, tat) VALUES (%s, %s) "  # noqa: S608 - our table name
        f"ON CONFLICT (bucket) DO UPDATE SET tat = CASE WHEN {table}.tat > %s "
        f"THEN {table}.tat + %s ELSE excluded.tat END "
        f"WHERE {table}.tat <= %s RETURNING tat"
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, [bucket, now + interval_ms, now, interval_ms, now + tolerance_ms])
            if cursor.fetchone() is not None:
                verdict = Verdict(True)
            else:
                cursor.execute(f"SELECT tat FROM {table} WHERE bucket = %s", [bucket])  # noqa: S608
                row = cursor.fetchone()
                wait_ms = interval_ms if row is None else max(0, row[0] - now - tolerance_ms)
                verdict = Verdict(False, wait_ms / 1000)
        _cleanup(connection, table, now)
    except DatabaseError:
        if not connection.in_atomic_block:
            connection.close()  # the next count reconnects
        raise
    return verdict


def _cleanup(connection: Any, table: str, now_ms: int) -> None:
    """Delete the buckets that are full again (their time has passed), at most once per
    ``CLEANUP_EVERY`` seconds per process."""
    global _cleaned_at
    if time.monotonic() - _cleaned_at < CLEANUP_EVERY:
        return
    _cleaned_at = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE tat < %s", [now_ms])  # noqa: S608


def _throttle_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="grace-throttle")
    return _executor


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# --- The store and the throttles ------------------------------------------------------


def throttle_count(bucket: str, *, rate: str) -> Verdict:
    """Count one request of ``bucket`` at ``rate`` (``"30/min"``) in the shared store."""
    interval_ms, tolerance_ms = gcra(rate)
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        return redis_count(cache, bucket, interval_ms=interval_ms, tolerance_ms=tolerance_ms)
    count = partial(database_count, bucket, interval_ms=interval_ms, tolerance_ms=tolerance_ms)
    if not _on_event_loop():
        return count()
    return _throttle_executor().submit(count).result(timeout=COUNT_TIMEOUT)


async def throttle_count_async(bucket: str, *, rate: str) -> Verdict:
    """``throttle_count`` from the event loop without blocking it: Redis answers on the
    loop (one round trip, bounded by the cache's socket timeout); the database count
    runs in a throttle thread, awaited at most ``COUNT_TIMEOUT``."""
    interval_ms, tolerance_ms = gcra(rate)
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        return redis_count(cache, bucket, interval_ms=interval_ms, tolerance_ms=tolerance_ms)
    count = partial(database_count, bucket, interval_ms=interval_ms, tolerance_ms=tolerance_ms)
    future = _throttle_executor().submit(count)
    async with asyncio.timeout(COUNT_TIMEOUT):
        return await asyncio.wrap_future(future)


def throttles_reset() -> None:
    """Forget every count (tests; an operator lifting every limit at once)."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        client = _redis_client(cache)
        keys = list(client.scan_iter(match=cache.make_key("throttle:*"), count=1000))
        if keys:
            client.delete(*keys)
    ThrottleBucket.objects.all().delete()


class _ChatThrottle(BaseThrottle):
    scope = "chat"

    def current_rate(self) -> str:
        raise NotImplementedError

    def bucket(self, request: HttpRequest) -> str | None:
        raise NotImplementedError

    def _counted(self, request: HttpRequest) -> tuple[str, str] | None:
        """The rate and the bucket to count this request in, or None (not throttled)."""
        rate = self.current_rate().strip().lower()
        if rate in RATE_OFF:
            return None
        bucket = self.bucket(request)
        if bucket is None:
            return None
        return rate, f"{self.scope}:{bucket}"

    def allow_request(self, request: HttpRequest) -> bool:
        _local.wait = None
        counted = getattr(request, COUNTED_ATTR, None)
        if counted is not None and self.scope in counted:
            verdict: Verdict | None = counted.pop(self.scope)  # counted by throttles_count
        else:
            verdict = self._count(request)
        if verdict is None:
            return True
        if not verdict.allowed:
            _local.wait = max(1.0, math.ceil(verdict.wait))
        return verdict.allowed

    def _count(self, request: HttpRequest) -> Verdict | None:
        what = self._counted(request)
        if what is None:
            return None
        rate, bucket = what
        try:
            return throttle_count(bucket, rate=rate)
        except Exception:  # the store failed or timed out: refuse, never skip counting
            logger.warning("throttle store failed; request refused", exc_info=True)
            return Verdict(False, 1.0)

    async def count_async(self, request: HttpRequest) -> Verdict | None:
        """This request's verdict (None: not throttled), awaited off the event loop."""
        what = self._counted(request)
        if what is None:
            return None
        rate, bucket = what
        try:
            return await throttle_count_async(bucket, rate=rate)
        except Exception:  # the store failed or timed out: refuse, never skip counting
            logger.warning("throttle store failed; request refused", exc_info=True)
            return Verdict(False, 1.0)

    def wait(self) -> float | None:
        return getattr(_local, "wait", None)


class UserThrottle(_ChatThrottle):
    """Token and session callers, keyed by user."""

    scope = "chat_user"

    def current_rate(self) -> str:
        return chat_settings.THROTTLE_USER

    def bucket(self, request: HttpRequest) -> str | None:
        owner = getattr(request, "auth", None)
        if owner is None or getattr(owner, "user_id", None) is None:
            return None
        return str(owner.user_id)


class AnonThrottle(_ChatThrottle):
    """Anonymous callers, keyed by client IP (so new sessions do not reset it)."""

    scope = "chat_anon"

    def current_rate(self) -> str:
        return chat_settings.THROTTLE_ANON

    def bucket(self, request: HttpRequest) -> str | None:
        owner = getattr(request, "auth", None)
        if owner is not None and getattr(owner, "user_id", None) is not None:
            return None
        return self.get_ident(request) or "unknown"


def chat_throttles() -> list[BaseThrottle]:
    return [UserThrottle(), AnonThrottle()]


async def throttles_count(request: Any, throttles: list[BaseThrottle]) -> None:
    """Count ``request`` against each chat throttle now, awaiting the store (the event
    loop keeps serving), and keep the verdicts on it for ``allow_request``."""
    counted: dict[str, Verdict | None] = {}
    for throttle in throttles:
        if isinstance(throttle, _ChatThrottle):
            counted[throttle.scope] = await throttle.count_async(request)
    setattr(request, COUNTED_ATTR, counted)


class CountedAsyncOperation(AsyncOperation):
    """An async ninja operation whose chat throttles are counted (awaited) right after
    authentication; ninja's synchronous throttle check then reads the verdicts, in the
    same order as before (401, then 429, then the body's 422)."""

    async def _run_authentication(self, request: HttpRequest) -> Any:  # type: ignore[override]
        error = await super()._run_authentication(request)
        if error is None and self.throttle_objects:
            await throttles_count(request, self.throttle_objects)
        return error


def router_count_async(router: Router) -> None:
    """Give the async operations of ``router`` (its routes all declared) awaited throttle
    counts (``CountedAsyncOperation``); call before the router is mounted."""
    for path_view in router.path_operations.values():
        for operation in path_view.operations:
            if type(operation) is AsyncOperation:
                operation.__class__ = CountedAsyncOperation
