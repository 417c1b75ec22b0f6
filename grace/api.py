"""The one ninja API of the project, mounted at ``/api/``.

Apps add their routers in ``grace/urls.py``; every exception a view raises is mapped
to the one error body here.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError

from grace.errorlog import errorlog_record
from grace.errors import error_response

logger = logging.getLogger(__name__)

# How much of a rejected input a validation detail may quote back.
ECHO_LIMIT = 100


class ApiError(Exception):
    """An error with its own status, code and details; raise a subclass or this."""

    status = 400
    error: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if error is not None:
            self.error = error
        self.details = details or []
        self.headers = headers or {}


api = NinjaAPI(
    title="Grace API",
    version="1.0.0",
    description="Chat that keeps answering when its parts fail. Every error has one body: "
    '{"error", "message", "details", "request_id"}.',
    urls_namespace="api",
)


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One detail per problem: the field, the problem, the limit; never a huge input."""
    details = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "payload")]
        detail: dict[str, Any] = {
            "field": ".".join(loc) or "body",
            "problem": err.get("type", "invalid"),
            "message": err.get("msg", "invalid value"),
        }
        ctx = err.get("ctx") or {}
        for key in ("min_length", "max_length", "ge", "le", "gt", "lt", "expected", "pattern"):
            if key in ctx:
                detail["limit" if key != "expected" else "expected"] = ctx[key]
        if "input" in err:
            value = err["input"]
            if isinstance(value, str) and len(value) > ECHO_LIMIT:
                detail["input_length"] = len(value)
            elif isinstance(value, str | int | float | bool) or value is None:
                detail["input"] = value
        details.append(detail)
    return details


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return error_response(
        status=422,
        error="validation_error",
        message="The request did not validate; see details.",
        details=validation_details(exc.errors),
    )


@api.exception_handler(ApiError)
def on_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return error_response(
        status=exc.status,
        error=exc.error,
        message=exc.message,
        details=exc.details,
        headers=exc.headers,
    )


@api.exception_handler(Throttled)
def on_throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    wait = max(1, int(exc.wait or 1))
    return error_response(
        status=429,
        message=f"Too many requests; try again in {wait} seconds.",
        headers={"Retry-After": str(wait)},
    )


@api.exception_handler(AuthenticationError)
def on_unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(
        status=401,
        message="Authentication is required: send 'Authorization: Bearer <token>' or log in.",
        headers={"WWW-Authenticate": 'Bearer realm="grace"'},
    )


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    message = str(exc)
    if exc.status_code == 400 and message == "Cannot parse request body":
        message = "The request body is not valid JSON."
    return error_response(status=exc.status_code, message=message)


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(status=404)


@api.exception_handler(Exception)
def on_exception(request: HttpRequest, exc: Exception) -> HttpResponse:
    errorlog_record(exc=exc, request=request)
    return error_response(status=500)
