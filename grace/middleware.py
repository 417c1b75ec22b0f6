"""Request IDs and JSON errors for every request, sync or async.

Both middlewares run in the mode of the request (Django picks ``__acall__`` under
ASGI), so a request never hops threads just to pass through them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from grace.errors import error_response
from grace.request_id import (
    HEADER,
    META_KEY,
    request_id_accept,
    request_id_reset,
    request_id_set,
)

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
BODY_METHODS = {"POST", "PUT", "PATCH"}
# Response headers worth keeping when an error response is rewritten as JSON.
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", HEADER)


class _Middleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)  # type: ignore[type-var]


class RequestIDMiddleware(_Middleware):
    """Takes a safe incoming ``X-Request-ID`` or makes one; sets it everywhere.

    The ID is in ``request.request_id``, in the contextvar read by logging and by
    the error body, and in the ``X-Request-ID`` header of every response.
    """

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        token = self._begin(request)
        try:
            response = self.get_response(request)
            response[HEADER] = request.request_id  # type: ignore[attr-defined]
            return response
        finally:
            request_id_reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        token = self._begin(request)
        try:
            response = await self.get_response(request)
            response[HEADER] = request.request_id  # type: ignore[attr-defined]
            return response
        finally:
            request_id_reset(token)

    @staticmethod
    def _begin(request: HttpRequest) -> Any:
        rid = request_id_accept(request.META.get(META_KEY))
        request.request_id = rid  # type: ignore[attr-defined]
        return request_id_set(rid)


class ApiErrorMiddleware(_Middleware):
    """Under ``/api/``: refuses oversized and non-JSON bodies, and rewrites every
    error response that is not already JSON into the one error body."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        refused = self._refuse(request)
        if refused is not None:
            return refused
        return self._rewrite(self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        if not request.path.startswith(API_PREFIX):
            return await get_response(request)
        refused = self._refuse(request)
        if refused is not None:
            return refused
        return self._rewrite(await get_response(request))

    @staticmethod
    def _refuse(request: HttpRequest) -> HttpResponseBase | None:
        limit = settings.GRACE_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(
                status=400, message="The Content-Length header is not a number."
            )
        if length > limit:
            return error_response(
                status=413,
                message=f"The request body is {length} bytes; the limit is {limit} bytes.",
                details=[{"field": "body", "problem": "too_large", "limit": limit}],
            )
        if request.method in BODY_METHODS and length > 0:
            content_type = request.content_type or ""
            if content_type != "application/json":
                return error_response(
                    status=415,
                    message=(
                        f"The request body must be JSON (Content-Type: application/json), "
                        f"not {content_type or 'unspecified'}."
                    )[:300],
                )
        return None

    @staticmethod
    def _rewrite(response: HttpResponseBase) -> HttpResponseBase:
        if response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        replacement = error_response(status=response.status_code)
        for name in KEPT_HEADERS:
            if response.has_header(name):
                replacement[name] = response[name]
        return replacement
