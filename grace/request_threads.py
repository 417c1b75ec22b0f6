"""One reusable thread per HTTP request in flight, instead of a new thread per request.

Django's ASGI handler runs each request in a ``ThreadSensitiveContext``: the request's
thread-sensitive sync code (the ``request_started``/``request_finished`` receivers,
``response.close()``, the async ORM's calls, Django's sync middleware hooks) runs on a
single-thread executor made for that request, started on its first call and joined by
yet another thread at its end: two thread starts per request, about 1 ms of CPU
(``bench/`` measures it on the anchor as well). ``RequestThreads`` hands each request a
single-thread executor from a pool of idle ones instead (asgiref's
``ThreadSensitiveContext(executor=...)``), so the semantics stay Django's: one request
at a time per thread, its sync calls in order on that thread, nothing shared with a
request in flight.

An executor goes back to the pool only when nothing of its request still runs on it (a
request cancelled by a client disconnect may have left a sync call running): otherwise,
and beyond ``IDLE_MAX`` idle ones, it is retired: its thread closes its database
connections and ends. Because the threads live on, Django's persistent connections
(``GRACE_DB_CONN_MAX_AGE``) work for the request threads as they do under WSGI: each
request's ``request_started``/``request_finished`` close what is too old or unusable, and
at most ``IDLE_MAX`` idle threads per process keep a connection open (Django's ticket
#33497: with a new thread per request every kept connection leaked with its thread).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.db import connections

Scope = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[None]]

SUPPORTED = "executor" in inspect.signature(ThreadSensitiveContext.__init__).parameters
"""asgiref's ``ThreadSensitiveContext(executor=...)`` (3.13 here); without it each
request keeps Django's new thread."""

IDLE_MAX = 32
"""Idle request threads kept per process (each may hold a database connection per
alias when ``GRACE_DB_CONN_MAX_AGE`` > 0)."""


class RequestThread(ThreadPoolExecutor):
    """A single-thread executor that counts the calls it has not finished."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="grace-request")
        self._lock = threading.Lock()
        self.pending = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self.pending += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Any) -> None:
        with self._lock:
            self.pending -= 1

    def retire(self) -> None:
        """Close this thread's connections (after whatever still runs), then end it."""
        try:
            ThreadPoolExecutor.submit(self, _close_connections)
        except RuntimeError:  # already shut down
            return
        self.shutdown(wait=False)


def _close_connections() -> None:
    for connection in connections.all(initialized_only=True):
        connection.close()


class RequestThreads:
    """Wraps Django's ASGI handler; other scope types pass through."""

    def __init__(self, app: ASGIApp, *, idle_max: int = IDLE_MAX) -> None:
        self.app = app
        self.idle_max = idle_max
        self.idle: list[RequestThread] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not SUPPORTED:
            await self.app(scope, receive, send)
            return
        executor = self.idle.pop() if self.idle else RequestThread()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            self._release(executor)

    def _release(self, executor: RequestThread) -> None:
        if executor.pending == 0 and len(self.idle) < self.idle_max:
            self.idle.append(executor)
        else:
            executor.retire()

    def close(self) -> None:
        """Retire every idle thread (tests; a server shutting down)."""
        while self.idle:
            self.idle.pop().retire()
