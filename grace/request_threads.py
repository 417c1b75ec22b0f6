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

``request_started`` costs no hop (``request_started_on_first_use``): Django's two
receivers of it (``close_old_connections``, ``reset_queries``) act on the request
thread's connections, so they run on that thread just before the request's first call
there, in the same hop, instead of in a hop of their own before every request. Most API
requests (async views, cached token) make no call there until ``response.close()``; under
32 connections that hop cost about 0.5 ms of CPU per request (docs/benchmarks.md).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core import signals
from django.db import close_old_connections, connections, reset_queries

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
        self.fresh = False
        """Handed to a request that has not run anything here yet."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self.pending += 1
            begin, self.fresh = self.fresh, False
        try:
            if begin:  # the request's first call here: its request_started work first
                future = super().submit(_request_begun, fn, *args, **kwargs)
            else:
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


request_thread_current: ContextVar[RequestThread | None] = ContextVar(
    "grace_request_thread", default=None
)
"""The request thread of the HTTP request being served (grace/asgi_handler.py asks
whether the request ran anything on it)."""


def _request_begun(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """What ``request_started`` did on this thread, then the request's first call."""
    reset_queries()
    close_old_connections()
    return fn(*args, **kwargs)


def request_started_on_first_use() -> None:
    """Take Django's ``request_started`` receivers off the signal: ``RequestThread`` runs
    them on the request's thread before its first call there (see the module's
    docstring). Only where ``RequestThreads`` serves the requests (``grace.asgi``)."""
    if SUPPORTED:
        signals.request_started.disconnect(close_old_connections)
        signals.request_started.disconnect(reset_queries)


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
        executor.fresh = True
        token = request_thread_current.set(executor)
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            request_thread_current.reset(token)
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
