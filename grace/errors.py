"""The one error body of every ``/api/`` response with a status >= 400.

``{"error": code, "message": sentence, "details": [...], "request_id": id}``
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django.http import JsonResponse

from grace.request_id import HEADER, request_id_get

# The ``error`` code for each status when the code does not choose a finer one.
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

STATUS_MESSAGES: dict[int, str] = {
    400: "The request could not be understood.",
    401: "Authentication is required.",
    403: "You do not have permission to do this.",
    404: "Nothing was found at this path.",
    405: "This method is not allowed on this path.",
    413: "The request body is too large.",
    415: "The request body must be JSON (Content-Type: application/json).",
    422: "The request did not validate.",
    429: "Too many requests; slow down.",
    500: "Something went wrong on our side; the request ID finds the details in the error log.",
    503: "The service is temporarily unavailable.",
}


# Set on every response built here, so the middleware can tell the contract's body from
# any other JSON error body and rewrite only the latter.
_MARK = "grace_error_body"


def is_error_response(response: object) -> bool:
    return getattr(response, _MARK, False) is True


def error_code_for(status: int) -> str:
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_message_for(status: int) -> str:
    if status in STATUS_MESSAGES:
        return STATUS_MESSAGES[status]
    try:
        return HTTPStatus(status).description or HTTPStatus(status).phrase
    except ValueError:
        return "The request failed."


def error_body(
    *,
    status: int,
    error: str | None = None,
    message: str | None = None,
    details: list[Any] | None = None,
) -> dict[str, Any]:
    return {
        "error": error or error_code_for(status),
        "message": message or error_message_for(status),
        "details": details or [],
        "request_id": request_id_get(),
    }


def error_response(
    *,
    status: int,
    error: str | None = None,
    message: str | None = None,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    """The JSON error response; the middleware leaves it as it is (see ``is_error_response``)."""
    body = error_body(status=status, error=error, message=message, details=details)
    response = JsonResponse(body, status=status)
    setattr(response, _MARK, True)
    for name, value in (headers or {}).items():
        response[name] = value
    if body["request_id"]:
        response[HEADER] = body["request_id"]
    return response


def too_large_response(*, limit: int, size: int | None = None) -> JsonResponse:
    message = (
        f"The request body is {size} bytes; the limit is {limit} bytes."
        if size is not None
        else f"The request body is over the limit of {limit} bytes."
    )
    return error_response(
        status=413,
        message=message,
        details=[{"field": "body", "problem": "too_large", "limit": limit}],
    )
