"""Logging helpers: every record carries the request ID of the work that wrote it."""

from __future__ import annotations

import logging

from grace.request_id import request_id_get


class RequestIDFilter(logging.Filter):
    """Adds ``record.request_id`` (``None`` outside a request).

    The contextvar covers everything that runs inside the request's context (views,
    middleware, ``sync_to_async`` threads, tasks). Django logs a few lines (``django.request``
    "Not Found", "Method Not Allowed") after the middleware has returned; those pass the
    request as ``extra``, and its ``request_id`` attribute is used instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            rid = request_id_get()
            if rid is None:
                rid = getattr(getattr(record, "request", None), "request_id", None)
            record.request_id = rid
        return True
