"""grace/request_threads.py: a request's thread-sensitive code runs on a thread of its
own for the request's life, reused by later requests, never shared with a request in
flight nor handed on while a call of its request still runs."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async

from grace.request_threads import SUPPORTED, RequestThreads


def test_the_required_asgiref_has_executor_contexts() -> None:
    """pyproject.toml asks for an asgiref with them: without, every request would fall
    back to Django's two new threads (and these tests would prove nothing)."""
    assert SUPPORTED


def http_scope() -> dict:
    return {"type": "http", "method": "GET", "path": "/", "headers": []}


class App:
    """An ASGI app whose request makes thread-sensitive calls and records their threads."""

    def __init__(self) -> None:
        self.threads: list[tuple[int, int]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, scope, receive, send) -> None:
        first = await sync_to_async(threading.get_ident)()
        if self.gate is not None:
            await self.gate.wait()
        second = await sync_to_async(threading.get_ident)()
        self.threads.append((first, second))


async def nothing():
    return {}


async def test_one_thread_per_request_reused_by_the_next():
    app = App()
    threads = RequestThreads(app)
    await threads(http_scope(), nothing, nothing)
    await threads(http_scope(), nothing, nothing)
    (a1, a2), (b1, b2) = app.threads
    assert a1 == a2 == b1 == b2  # one thread, kept
    assert a1 != threading.get_ident()
    threads.close()


async def test_requests_in_flight_never_share_a_thread():
    app = App()
    app.gate = asyncio.Event()
    threads = RequestThreads(app)
    requests = [asyncio.ensure_future(threads(http_scope(), nothing, nothing)) for _ in range(3)]
    await asyncio.sleep(0.05)
    app.gate.set()
    await asyncio.gather(*requests)
    assert all(first == second for first, second in app.threads)
    assert len({first for first, _ in app.threads}) == 3
    assert len(threads.idle) == 3
    threads.close()


async def test_at_most_idle_max_threads_are_kept():
    app = App()
    app.gate = asyncio.Event()
    threads = RequestThreads(app, idle_max=2)
    requests = [asyncio.ensure_future(threads(http_scope(), nothing, nothing)) for _ in range(4)]
    await asyncio.sleep(0.05)
    app.gate.set()
    await asyncio.gather(*requests)
    assert len(threads.idle) == 2
    threads.close()


async def test_a_thread_still_running_a_cancelled_call_is_not_handed_on():
    """A client that went away cancels its request; the sync call it was waiting for runs
    on. The next request must not queue behind it."""
    release = threading.Event()
    started = threading.Event()

    async def stuck(scope, receive, send) -> None:
        def block() -> None:
            started.set()
            release.wait(10)

        await sync_to_async(block)()

    threads = RequestThreads(stuck)
    request = asyncio.ensure_future(threads(http_scope(), nothing, nothing))
    await asyncio.to_thread(started.wait, 5)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert threads.idle == []  # retired, not kept

    app = App()
    threads.app = app
    await asyncio.wait_for(threads(http_scope(), nothing, nothing), 5)  # not behind `block`
    release.set()
    threads.close()


async def test_websockets_pass_through():
    seen = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    threads = RequestThreads(app)
    await threads({"type": "websocket"}, nothing, nothing)
    assert seen == ["websocket"] and threads.idle == []


@pytest.mark.django_db(transaction=True)
async def test_a_requests_first_call_finds_its_threads_old_connection_closed():
    """``request_started``'s work (Django closes connections past their age) runs on the
    request's thread before its first call there (grace.asgi takes it off the signal)."""
    from django.db import connection

    seen = []

    def first_call() -> None:
        seen.append(connection.connection)  # None: closed before this call
        connection.ensure_connection()
        connection.close_at = 0  # past its age (GRACE_DB_CONN_MAX_AGE) from now on

    async def app(scope, receive, send) -> None:
        await sync_to_async(first_call)()

    threads = RequestThreads(app)
    await threads(http_scope(), nothing, nothing)
    await threads(http_scope(), nothing, nothing)  # same thread, its connection now old
    assert len(threads.idle) == 1
    assert seen == [None, None]
    threads.close()
