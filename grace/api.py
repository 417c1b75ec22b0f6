"""The one ninja API of the project, mounted at ``/api/``.

Apps add their routers in ``grace/urls.py``; every exception a view raises is mapped
to the one error body here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError
from ninja.parser import Parser

from grace.errorlog import errorlog_record
from grace.errors import error_response, too_large_response
from grace.json_body import InvalidJson, StrictJsonParser
from grace.ops_conf import ops_settings

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
    parser=StrictJsonParser(),
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


def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return error_response(
        status=422,
        error="validation_error",
        message="The request did not validate; see details.",
        details=validation_details(exc.errors),
    )


def on_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return error_response(
        status=exc.status,
        error=exc.error,
        message=exc.message,
        details=exc.details,
        headers=exc.headers,
    )


def on_throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    wait = max(1, math.ceil(exc.wait or 1))  # ninja sets Retry-After to the same ceiling
    return error_response(
        status=429,
        message=f"Too many requests; try again in {wait} seconds.",
        headers={"Retry-After": str(wait)},
    )


def on_unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(
        status=401,
        message="Authentication is required: send 'Authorization: Bearer <token>' or log in.",
        headers={"WWW-Authenticate": 'Bearer realm="grace"'},
    )


def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, InvalidJson):  # ninja wraps what the parser raised
        return on_invalid_json(request, exc.__cause__)
    message = str(exc)
    if exc.status_code == 400 and message.startswith("Cannot parse request body"):
        # ninja appends the parser's exception text under DEBUG; keep the sentence only.
        message = "The request body is not valid JSON."
    return error_response(status=exc.status_code, message=message)


def on_invalid_json(request: HttpRequest, exc: InvalidJson) -> HttpResponse:
    return error_response(status=400, message=exc.message, details=exc.details)


def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(status=404)


def on_permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return error_response(status=403)


def on_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    # A body without Content-Length that the middleware could not measure.
    return too_large_response(limit=ops_settings.MAX_BODY_BYTES)


def on_suspicious(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
    logger.warning("suspicious request refused: %s", type(exc).__name__)
    return error_response(status=400)


def on_exception(request: HttpRequest, exc: Exception) -> HttpResponse:
    """Anything else is a bug: a row in the error log, a 500 without any exception text."""
    errorlog_record(exc=exc, request=request)
    return error_response(status=500)


HANDLERS: list[tuple[type[Exception], Callable[[HttpRequest, Any], HttpResponse]]] = [
    (ValidationError, on_validation_error),
    (ApiError, on_api_error),
    (Throttled, on_throttled),
    (AuthenticationError, on_unauthenticated),
    (HttpError, on_http_error),
    (InvalidJson, on_invalid_json),
    (Http404, on_not_found),
    (PermissionDenied, on_permission_denied),
    (RequestDataTooBig, on_too_large),
    (SuspiciousOperation, on_suspicious),
    (Exception, on_exception),
]


def api_errors_install(target: NinjaAPI) -> None:
    """Map every exception to the one error body on ``target`` (ninja picks the
    handler of the closest class in the exception's MRO), and parse its JSON bodies
    strictly (a bad shape is a 400, never a 500)."""
    if type(target.parser) is Parser:
        target.parser = StrictJsonParser()
    for exc_class, handler in HANDLERS:
        target.add_exception_handler(exc_class, handler)


api_errors_install(api)
