"""Wall-clock limits and waits for the tests, all scaled by one factor.

``GRACE_TEST_TIME_FACTOR`` (default ``1``) multiplies every wall-clock limit a test
asserts (``limit(0.5)``) and every wait on a condition (``wait_until(..., timeout=5)``).
Raise it on a machine slower or busier than a developer's laptop, for example
``GRACE_TEST_TIME_FACTOR=3 make test`` under coverage, a debugger or an emulated CPU.

It scales only how long a test is willing to wait, never what the test configures in
Grace: a bound written as "the configured deadline plus a margin" is written
``deadline + limit(margin)``, so the product must still honour its own deadline. Lower
bounds ("waited at least 0.3 s") are never scaled.

A wait polls its condition instead of sleeping a fixed time: it returns as soon as the
condition holds, so a fast machine is not slowed down by a factor meant for slow ones.
A test that asserts something did *not* happen first waits for a positive control (the
same setup doing something observable that would have come after it), so that it
cannot pass just because the machine was too slow for the unwanted thing to happen yet.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

TIME_FACTOR = float(os.environ.get("GRACE_TEST_TIME_FACTOR", "1"))
if not TIME_FACTOR > 0:
    raise ValueError(f"GRACE_TEST_TIME_FACTOR must be a positive number, not {TIME_FACTOR!r}")


def limit(seconds: float) -> float:
    """A wall-clock limit for an assertion: ``seconds`` times GRACE_TEST_TIME_FACTOR."""
    return seconds * TIME_FACTOR


def _timed_out(message: str, timeout: float, last: Any) -> AssertionError:
    return AssertionError(
        f"{message}: not within {limit(timeout):.2f}s "
        f"(GRACE_TEST_TIME_FACTOR={TIME_FACTOR:g}); last value: {last!r}"
    )


def wait_until(
    predicate: Callable[[], T], *, timeout: float, interval: float = 0.02, message: str
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Gives up after ``limit(timeout)`` seconds with an AssertionError saying ``message``
    (what was awaited) and the last value seen.
    """
    deadline = time.monotonic() + limit(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout, value)
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float,
    interval: float = 0.02,
    message: str,
) -> T:
    """``wait_until`` for the event loop: ``predicate`` may be sync or a coroutine
    function; the loop runs other tasks between two calls."""
    deadline = time.monotonic() + limit(timeout)
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout, value)
        await asyncio.sleep(interval)
