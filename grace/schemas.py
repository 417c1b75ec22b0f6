"""Schemas of the core's API contract: the one error body (``grace.errors.error_body``)
as the OpenAPI schema documents it for every error status."""

from __future__ import annotations

from typing import Any

from ninja import Schema
from pydantic import Field


class ErrorOut(Schema):
    """The body of every ``/api/`` response with a status of 400 or more."""

    error: str = Field(
        description="A stable code to branch on: the status's (validation_error, not_found, "
        "rate_limited, ...) or a finer one (busy, masking_failed, queue_full, unhealthy, ...)."
    )
    message: str = Field(description="One sentence for a person; never a traceback.")
    details: list[Any] = Field(
        description="What exactly was wrong, one item per problem (for a validation error: "
        "field, problem, message, and the limit or the short input when there is one)."
    )
    request_id: str = Field(
        description="The X-Request-ID of the response: it finds the request in the logs."
    )


class HealthOut(Schema):
    """``GET /api/health`` when every check passes."""

    status: str = Field(description='"ok".')
    checks: dict[str, dict[str, Any]] = Field(
        description='One result per dependency: {"status": "ok", ...what it measured}.'
    )
