"""Security headers, request IDs and JSON errors for every request, sync or async.

Both middlewares run in the mode of the request (Django picks ``__acall__`` under
ASGI), so a request never hops threads just to pass through them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponseBase

from grace.errors import error_response, is_error_response, too_large_response
from grace.headers import CspNonce, security_headers
from grace.ops_conf import ops_settings
from grace.request_id import (
    HEADER,
    META_KEY,
    request_id_accept,
    request_id_reset,
    request_id_set,
)

access_logger = logging.getLogger("grace.access")

API_PREFIX = "/api/"
BODY_METHODS = {"POST", "PUT", "PATCH"}
# Response headers worth keeping when an error response is rewritten as JSON.
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", HEADER)
# A foreign JSON error body larger than this is not read for a message to keep.
SALVAGE_LIMIT = 16384


class _Middleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)  # type: ignore[type-var]


class SecurityHeadersMiddleware(_Middleware):
    """First in ``MIDDLEWARE``: every response Django makes, errors and refusals of the
    middleware below included, gets the security headers and the Content-Security-Policy
    (grace/headers.py), which names ``request.csp_nonce`` when the page used it. A header
    already set (by a view, or Django's own middleware) is kept."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        nonce = self._begin(request)
        return self._finish(self.get_response(request), nonce)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        nonce = self._begin(request)
        return self._finish(await self.get_response(request), nonce)

    @staticmethod
    def _begin(request: HttpRequest) -> CspNonce:
        nonce = CspNonce()
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        return nonce

    @staticmethod
    def _finish(response: HttpResponseBase, nonce: CspNonce) -> HttpResponseBase:
        for name, value in security_headers(nonce=nonce.used).items():
            if not response.has_header(name):
                response[name] = value
        return response


class RequestIDMiddleware(_Middleware):
    """Takes a safe incoming ``X-Request-ID`` or makes one; sets it everywhere.

    The ID is in ``request.request_id``, in the contextvar read by logging and by
    the error body, and in the ``X-Request-ID`` header of every response. With
    ``GRACE_ACCESS_LOG`` on, one ``grace.access`` line per request records method,
    path, status and duration.
    """

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        self.access_log = ops_settings.ACCESS_LOG

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        started = time.perf_counter()
        token = self._begin(request)
        try:
            response = self.get_response(request)
            response[HEADER] = request.request_id  # type: ignore[attr-defined]
            self._log(request, response, started)
            return response
        finally:
            request_id_reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        token = self._begin(request)
        try:
            response = await self.get_response(request)
            response[HEADER] = request.request_id  # type: ignore[attr-defined]
            self._log(request, response, started)
            return response
        finally:
            request_id_reset(token)

    @staticmethod
    def _begin(request: HttpRequest) -> Any:
        rid = request_id_accept(request.META.get(META_KEY))
        request.request_id = rid  # type: ignore[attr-defined]
        return request_id_set(rid)

    def _log(self, request: HttpRequest, response: HttpResponseBase, started: float) -> None:
        if not self.access_log or not access_logger.isEnabledFor(logging.INFO):
            return
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        access_logger.info(
            "%s %s %s %sms",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
            },
        )


class ApiErrorMiddleware(_Middleware):
    """Under ``/api/``: refuses oversized and non-JSON bodies, and rewrites every
    error response that is not already the one error body into it."""

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

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        """A plain (non-ninja) view under ``/api/`` that read a body over the limit:
        Django would answer 400; the contract says 413."""
        if request.path.startswith(API_PREFIX) and isinstance(exception, RequestDataTooBig):
            return too_large_response(limit=ops_settings.MAX_BODY_BYTES)
        return None

    @staticmethod
    def _refuse(request: HttpRequest) -> HttpResponseBase | None:
        limit = ops_settings.MAX_BODY_BYTES
        raw_length = request.META.get("CONTENT_LENGTH")
        if raw_length:
            try:
                size = int(raw_length)
            except ValueError:
                size = -1
            if size < 0:
                return error_response(
                    status=400, message="The Content-Length header is not a valid number."
                )
        else:
            size = _buffered_size(request)
        if size > limit:
            return too_large_response(limit=limit, size=size)
        if request.method in BODY_METHODS and size > 0:
            content_type = request.content_type or ""
            if content_type != "application/json" and not content_type.endswith("+json"):
                shown = content_type[:100] or "unspecified"
                return error_response(
                    status=415,
                    message=(
                        "The request body must be JSON (Content-Type: application/json), "
                        f"not {shown}."
                    ),
                    details=[
                        {
                            "field": "Content-Type",
                            "problem": "unsupported",
                            "expected": "application/json",
                        }
                    ],
                )
        return None

    @staticmethod
    def _rewrite(response: HttpResponseBase) -> HttpResponseBase:
        if response.status_code < 400 or is_error_response(response):
            return response
        message, details = _salvage(response)
        replacement = error_response(status=response.status_code, message=message, details=details)
        for name in KEPT_HEADERS:
            if response.has_header(name):
                replacement[name] = response[name]
        # Django logs each error response once; the replacement is the same response.
        if getattr(response, "_has_been_logged", False):
            replacement._has_been_logged = True  # type: ignore[attr-defined]
        response.close()
        return replacement


def _buffered_size(request: HttpRequest) -> int:
    """Bytes of a body sent without Content-Length (``Transfer-Encoding: chunked``).

    The ASGI handler has already buffered the whole body in a seekable file (Django
    itself measures it the same way in ``HttpRequest.body``); other streams count 0.
    """
    stream = getattr(request, "_stream", None)
    seekable = getattr(stream, "seekable", None)
    if stream is None or seekable is None or not seekable():
        return 0
    position = stream.tell()
    end = stream.seek(0, os.SEEK_END)
    stream.seek(position)
    return int(end - position)


def _salvage(response: HttpResponseBase) -> tuple[str | None, list[Any] | None]:
    """Keep the message of a foreign 4xx JSON body (e.g. ``{"detail": "..."}``).

    A 5xx body is never quoted: it may carry exception text.
    """
    if response.status_code >= 500 or response.streaming:
        return None, None
    if not response.get("Content-Type", "").startswith("application/json"):
        return None, None
    content = getattr(response, "content", b"")
    if not content or len(content) > SALVAGE_LIMIT:
        return None, None
    try:
        body = json.loads(content)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    message = body.get("message") or body.get("detail")
    details = body.get("details")
    if isinstance(body.get("detail"), list):
        details = body["detail"]
    return (
        message[:500] if isinstance(message, str) else None,
        details if isinstance(details, list) else None,
    )
