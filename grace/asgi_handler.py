"""Django's ASGI handler with one thread hop fewer per request: ``GraceASGIHandler``.

Django ends every request with ``await sync_to_async(response.close)()``: a hop to the
request's thread (grace/request_threads.py) to send ``request_finished``. Its receivers
(Django's ``close_old_connections``, ``close_caches``, ``reset_urlconf``) act on the
calling thread's connections, the caches' ``close()`` and the URLconf of the context.
When the request ran nothing on its thread (an async view and a cached API token: every
chat request), that thread has nothing of the request to release, so:

- the response is closed on the event loop when it holds nothing to release but the
  request (its body, read into memory by the handler; not a streamed or file response)
  and ``request_finished`` has no receivers
  but those three: the loop thread has no database connections (the ORM refuses to run
  on it), Grace's caches (Redis, local memory) close nothing, and the URLconf is the
  request context's;
- otherwise (a streaming or file response, another app's receiver, a request whose
  thread ran something) it is Django's hop, unchanged.

The request thread's own connections are then checked at its next request's first call
there (``RequestThread``), as Django's ``request_started`` would. Under 32 connections the
hop cost about 0.35 ms of CPU per request (docs/benchmarks.md).

``handle`` is Django 5.2's (django/core/handlers/asgi.py) with that one line changed:
``await _response_close(response)``; tests/grace/test_asgi_handler.py compares the two.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import reset_urlconf
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponseBase
from django.urls import set_script_prefix

from grace.request_threads import request_thread_current

SAFE_ON_THE_LOOP = frozenset({close_old_connections, close_caches, reset_urlconf})
"""``request_finished`` receivers that may run on the event loop (see the docstring)."""


def _receivers(signal: Any) -> set[Any]:
    live = set()
    for entry in signal.receivers:
        ref = entry[1]
        live.add(ref() if isinstance(ref, weakref.ReferenceType) else ref)
    return live


def _request_close(closer: Any) -> bool:
    """``closer`` is a request's ``close()``: its in-memory body (and uploads, if any)."""
    return getattr(closer, "__name__", "") == "close" and isinstance(
        getattr(closer, "__self__", None), HttpRequest
    )


def close_on_the_loop(response: HttpResponseBase) -> bool:
    """Whether ``response`` may be closed on the event loop (see the module's docstring)."""
    thread = request_thread_current.get()
    return (
        thread is not None
        and thread.fresh
        and not response.streaming
        and all(_request_close(c) for c in response._resource_closers)  # type: ignore[attr-defined]
        and _receivers(signals.request_finished) <= SAFE_ON_THE_LOOP
    )


async def _response_close(response: HttpResponseBase) -> None:
    if close_on_the_loop(response):
        response.close()
    else:
        await sync_to_async(response.close)()


class GraceASGIHandler(ASGIHandler):
    async def handle(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: C901
        """
        Handles the ASGI request. Called via the __call__ method.
        """
        # Receive the HTTP request body as a stream object.
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        # Request is complete and can be served.
        set_script_prefix(get_script_prefix(scope))
        await signals.request_started.asend(sender=self.__class__, scope=scope)
        # Get the request and check for basic issues.
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)  # type: ignore[arg-type]
            await sync_to_async(error_response.close)()  # type: ignore[union-attr]
            return

        async def process_request(request: Any, send: Any) -> Any:
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                # Client disconnected during send_response (ignore exception).
                pass

            return response

        # Try to catch a disconnect while getting response.
        tasks = [
            # Check the status of these tasks and (optionally) terminate them
            # in this order. The listen_for_disconnect() task goes first
            # because it should not raise unexpected errors that would prevent
            # us from cancelling process_request().
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # Now wait on both tasks (they may have both finished by now).
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    # Ignore client disconnects.
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                # Allow views to handle cancellation.
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    # Task re-raised the CancelledError as expected.
                    pass

        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            await _response_close(response)

        body_file.close()
