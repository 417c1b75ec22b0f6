"""The one ninja API of the project, mounted at ``/api/``.

Apps add their routers in ``grace/urls.py``; every exception a view raises is mapped
to the one error body here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled, ValidationError
from ninja.parser import Parser

from grace.errorlog import errorlog_record
from grace.errors import error_response, too_large_response
from grace.json_body import InvalidJson, StrictJsonParser
from grace.ops_conf import ops_settings
from grace.schemas import ErrorOut

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


# What each error status means on this API: the description of its documented response.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The request could not be read: a body that is not strict JSON (a NUL character, "
    "a lone surrogate, a duplicate key, too deep) or a bad Content-Length.",
    401: "No valid credentials: send `Authorization: Bearer <token>` (or log in); "
    "`WWW-Authenticate` says which.",
    403: "Not allowed: a logged-in session without the CSRF token, or not staff.",
    404: "Nothing of yours at this path.",
    413: "The body is over `GRACE_MAX_BODY_BYTES`; `details[0].limit` says the limit.",
    415: "A body that is not `application/json`.",
    422: "The request did not validate; `details` has one item per problem.",
    429: "Too many requests; `Retry-After` says how many seconds to wait.",
    500: "A bug on our side: the request ID finds it in the error log. No traceback is shown.",
    503: "Not available now; `error` says why and `Retry-After` (when sent) when to try again.",
}
# Every operation can answer these: a bad Content-Length or request (400), a body over
# the limit whatever the method (413), a bug (500).
ALWAYS = (400, 413, 500)
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before trying again, when known.",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}

# Schemes of views that check credentials themselves (``/api/metrics``), named in their
# ``openapi_extra["security"]``; ninja lists only the schemes of its auth classes.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "MetricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "GRACE_METRICS_TOKEN, for Prometheus.",
    },
}


def errors(*statuses: int) -> dict[int, type[ErrorOut]]:
    """The error responses of an operation for its ``response={...}``: the statuses it
    can return besides ``ALWAYS``, each with the one error body. Exception handlers make
    these responses; the view itself only returns its success body."""
    return dict.fromkeys(sorted({*ALWAYS, *statuses}), ErrorOut)


def _body_without_null(operation: dict[str, Any]) -> None:
    """An optional body is documented by ninja as ``anyOf: [X, null]``; the strict parser
    refuses any body that is not an object (a ``null`` body is a 400), so a body, when
    sent, is ``X`` (found by schemathesis: a schema-valid ``null`` body refused)."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    choices = content.get("schema", {}).get("anyOf")
    if isinstance(choices, list) and {"type": "null"} in choices:
        rest = [choice for choice in choices if choice != {"type": "null"}]
        content["schema"] = rest[0] if len(rest) == 1 else {"anyOf": rest}


class GraceAPI(NinjaAPI):
    """The project's API: its OpenAPI schema describes every error response the same way
    (the status's meaning, ``Retry-After`` on 429 and 503, ``WWW-Authenticate`` on 401)
    and a request body as the strict parser reads it (an object, never ``null``)."""

    def get_openapi_operation_id(self, operation: Any) -> str:
        """The view's own name (``chat_post``, ``conversation_get``): what a generated
        client calls the operation. View names are unique across the API (a test checks)."""
        return str(operation.view_func.__name__)

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> Any:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        for name, scheme in SECURITY_SCHEMES.items():
            schemes.setdefault(name, scheme)
        schemes.setdefault(
            "SessionUserAuth",
            {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME},
        )
        for operations in schema["paths"].values():
            for operation in operations.values():
                _body_without_null(operation)
                for code, response in operation.get("responses", {}).items():
                    status = int(code)
                    if status < 400 or status not in ERROR_DESCRIPTIONS:
                        continue
                    response["description"] = ERROR_DESCRIPTIONS[status]
                    if status in _HEADERS:
                        response.setdefault("headers", {}).update(_HEADERS[status])
        return schema


api = GraceAPI(
    title="Grace API",
    version="1.0.0",
    description="Chat that keeps answering when its parts fail. Authenticate with "
    "`Authorization: Bearer <token>` (`manage.py create_api_token USER --create-user`). "
    "Every error has one body, `ErrorOut`: "
    '{"error", "message", "details", "request_id"}, the request ID also in the '
    "`X-Request-ID` header. Bodies are strict JSON: a string holding a NUL character or a "
    "lone surrogate, a duplicate key or very deep nesting is a 400.",
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
