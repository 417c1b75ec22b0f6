"""``QueueFull`` on the API: a view that enqueues answers 503 with ``Retry-After``.

Imported from grace/urls.py; registers its handler on the project's one NinjaAPI.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse

from executor.exceptions import QueueFull
from grace.api import api
from grace.errors import error_response


def queue_full_response(exc: QueueFull) -> HttpResponse:
    """The 503 error body for a full queue; usable from any view, not only ninja's."""
    return error_response(
        status=503,
        error="queue_full",
        message=f"The {exc.queue_name!r} queue is full; try again in {exc.retry_after} seconds.",
        details=[{"queue": exc.queue_name, "max_pending": exc.max_pending}],
        headers={"Retry-After": str(exc.retry_after)},
    )


def on_queue_full(request: HttpRequest, exc: Any) -> HttpResponse:
    return queue_full_response(exc)


api.add_exception_handler(QueueFull, on_queue_full)
