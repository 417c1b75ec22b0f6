"""Django's own middleware, run on the event loop when it cannot block.

Under ASGI, ``MiddlewareMixin`` runs every ``process_request``/``process_response`` of
Django's built-in middleware through ``sync_to_async``: with the usual stack that is a
dozen round trips to a worker thread per request, most of a cheap request's cost
(``bench/bench_health.py`` measures it). Almost all of those hooks only read headers
and cookies; the subclasses here call them inline and keep the thread hop for the
cases that touch the database (a modified session, stored messages, sessions as the
CSRF store). Behaviour is Django's own: same classes, same settings, same tests.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponseBase
from django.middleware import clickjacking, common, csrf, security

from grace.middleware import API_PREFIX


class InlineMixin:
    """Calls the hooks inline unless ``*_inline`` says they may do I/O."""

    get_response: Any

    def request_inline(self, request: HttpRequest) -> bool:
        return True

    def response_inline(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return True

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            if self.request_inline(request):
                response = process_request(request)
            else:
                response = await sync_to_async(process_request, thread_sensitive=True)(request)
        response = response or await self.get_response(request)
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            if self.response_inline(request, response):
                response = process_response(request, response)
            else:
                response = await sync_to_async(process_response, thread_sensitive=True)(
                    request, response
                )
        return response


class SecurityMiddleware(InlineMixin, security.SecurityMiddleware):
    """Headers and redirects only."""


class CommonMiddleware(InlineMixin, common.CommonMiddleware):
    """Host check, slash redirects, Content-Length: no I/O.

    No slash redirects under ``/api/``: an API client gets a JSON 404 for a path
    without its trailing slash, not a 301 that turns a POST into a GET (and not the
    RuntimeError Django raises for that POST under DEBUG).
    """

    def should_redirect_with_slash(self, request: HttpRequest) -> bool:
        if request.path_info.startswith(API_PREFIX):
            return False
        return bool(super().should_redirect_with_slash(request))


class XFrameOptionsMiddleware(InlineMixin, clickjacking.XFrameOptionsMiddleware):
    """One header."""


class AuthenticationMiddleware(InlineMixin, auth.AuthenticationMiddleware):
    """Sets the lazy ``request.user``/``request.auser``; the user loads on first use."""


class SessionMiddleware(InlineMixin, sessions.SessionMiddleware):
    """The session store is lazy; only saving a modified session writes."""

    def response_inline(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        session = getattr(request, "session", None)
        if session is None:
            return True
        return not session.modified and not settings.SESSION_SAVE_EVERY_REQUEST


class MessageMiddleware(InlineMixin, messages.MessageMiddleware):
    """Storing messages may read the session; a request without messages does not."""

    def response_inline(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        storage = getattr(request, "_messages", None)
        if storage is None:
            return True
        return not storage.used and not storage.added_new


class CsrfViewMiddleware(InlineMixin, csrf.CsrfViewMiddleware):
    """The token lives in a cookie (inline) unless CSRF_USE_SESSIONS (thread).

    ``process_view`` (the check itself) becomes a coroutine in async mode, so the
    handler does not wrap it in ``sync_to_async``; it parses an already buffered body.
    """

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if iscoroutinefunction(get_response) and not settings.CSRF_USE_SESSIONS:
            sync_view = self.process_view

            async def process_view(
                request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any
            ) -> HttpResponseBase | None:
                return sync_view(request, callback, callback_args, callback_kwargs)

            self.process_view = process_view  # type: ignore[method-assign,assignment]

    def request_inline(self, request: HttpRequest) -> bool:
        return not settings.CSRF_USE_SESSIONS

    def response_inline(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return not settings.CSRF_USE_SESSIONS
