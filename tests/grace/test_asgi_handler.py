"""grace/asgi_handler.py: a request that ran nothing on its request thread is closed on
the event loop (no hop, no thread started); anything else is closed as Django does, on
the request's thread. Its ``handle`` is Django's but for that one line."""

from __future__ import annotations

import difflib
import inspect
import re
import threading
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse, StreamingHttpResponse
from django.test import RequestFactory

from grace.asgi_handler import GraceASGIHandler, close_on_the_loop
from grace.auth import api_token_create
from grace.request_threads import (
    RequestThread,
    RequestThreads,
    request_started_on_first_use,
    request_thread_current,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _body(source: str) -> list[str]:
    """``handle``'s lines without the annotations (and their comments) the copy adds."""
    source = re.sub(
        r": Any|  # noqa: C901|  # type: ignore\[[a-z-]+\]| -> (None|Any)", "",
        inspect.cleandoc(source),
    )
    return source.splitlines()


def test_handle_is_djangos_with_only_the_close_changed() -> None:
    ours = _body(inspect.getsource(GraceASGIHandler.handle))
    djangos = _body(inspect.getsource(ASGIHandler.handle))
    changed = [
        line for line in difflib.unified_diff(djangos, ours, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == [
        "-    await sync_to_async(response.close)()",
        "+    await _response_close(response)",
    ], "Django's ASGIHandler.handle changed: copy it again into grace/asgi_handler.py"


def _fresh_thread() -> RequestThread:
    thread = RequestThread()
    thread.fresh = True
    return thread


def _with_request_closer(response: Any) -> Any:
    response._resource_closers.append(RequestFactory().get("/").close)
    return response


def test_what_may_close_on_the_loop() -> None:
    thread = _fresh_thread()
    token = request_thread_current.set(thread)
    try:
        assert close_on_the_loop(_with_request_closer(HttpResponse(b"{}")))
        streamed = StreamingHttpResponse(iter([b"a"]))
        assert not close_on_the_loop(streamed)
        holding = HttpResponse(b"{}")
        holding._resource_closers.append(lambda: None)  # a file, say
        assert not close_on_the_loop(holding)

        def another_apps_receiver(**kwargs: Any) -> None:
            pass

        signals.request_finished.connect(another_apps_receiver)
        try:
            assert not close_on_the_loop(HttpResponse(b"{}"))
        finally:
            signals.request_finished.disconnect(another_apps_receiver)
        thread.fresh = False  # the request ran something on its thread
        assert not close_on_the_loop(HttpResponse(b"{}"))
    finally:
        request_thread_current.reset(token)
    assert not close_on_the_loop(HttpResponse(b"{}"))  # not served by RequestThreads


@pytest.fixture
def token() -> str:
    user = get_user_model().objects.create_user("handler")
    return api_token_create(user=user, name="tests")[1]


async def _chat(app: Any, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.post(
            "/api/chat/", json={"message": "Hello!"},
            headers={"Authorization": f"Bearer {token}"},
        )


async def test_a_chat_request_starts_no_request_thread(token: str) -> None:
    """As grace.asgi serves it: nothing of a chat request runs on a request thread."""
    request_started_on_first_use()  # what grace.asgi does (Django's test clients undo it)
    threads = RequestThreads(GraceASGIHandler())
    for _ in range(2):  # the first one looks the token up (a stage thread), then cached
        response = await _chat(threads, token)
        assert response.status_code == 200, response.text
        assert response.json()["response"]
    [executor] = threads.idle
    assert executor._threads == set()  # type: ignore[attr-defined]
    threads.close()


async def test_with_another_apps_receiver_the_close_runs_on_the_request_thread(
    token: str,
) -> None:
    seen: list[str] = []

    def finished(**kwargs: Any) -> None:
        seen.append(threading.current_thread().name)

    signals.request_finished.connect(finished)
    threads = RequestThreads(GraceASGIHandler())
    try:
        response = await _chat(threads, token)
    finally:
        signals.request_finished.disconnect(finished)
        threads.close()
    assert response.status_code == 200
    assert len(seen) == 1 and seen[0].startswith("grace-request")
