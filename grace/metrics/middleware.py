"""Request metrics: route, method, status and latency of every HTTP request, plus the
error code of every error body under ``/api/`` (which exception handler answered).

It only appends to the in-memory buffer (grace/metrics/buffer.py): no database on the
request path. Placed right after ``RequestIDMiddleware``, it sees the final response.
The route is the URL pattern (``api/chat/conversations/<uuid:conversation_id>``), never
the path, so label sets stay bounded; unmatched paths count as ``<unmatched>``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from grace.errors import is_error_response
from grace.metrics.buffer import metric_record

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ERROR_BODY_LIMIT = 65536


class MetricsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)  # type: ignore[type-var]

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        started = time.perf_counter()
        response = self.get_response(request)
        request_metrics_record(request, response, time.perf_counter() - started)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = await self.get_response(request)
        request_metrics_record(request, response, time.perf_counter() - started)
        return response


def request_route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None) if match is not None else None
    return str(route) if route else "<unmatched>"


def request_metrics_record(
    request: HttpRequest, response: HttpResponseBase, seconds: float
) -> None:
    route = request_route(request)
    method = request.method if request.method in METHODS else "OTHER"
    status = response.status_code
    request_id = getattr(request, "request_id", "") or ""
    metric_record(
        "http_requests", labels={"route": route, "method": method, "status": status},
        request_id=request_id,
    )
    metric_record(
        "http_request_duration_seconds", seconds, labels={"route": route, "method": method},
        request_id=request_id,
    )
    if status >= 400 and request.path.startswith("/api/") and is_error_response(response):
        metric_record(
            "api_errors", labels={"error": _error_code(response), "status": status},
            request_id=request_id,
        )


def _error_code(response: HttpResponseBase) -> str:
    content = getattr(response, "content", b"")
    if not content or len(content) > ERROR_BODY_LIMIT:
        return "unknown"
    try:
        return str(json.loads(content).get("error") or "unknown")
    except (ValueError, AttributeError):
        return "unknown"
