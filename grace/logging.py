"""Logging helpers: every record carries the request ID of the work that wrote it."""

from __future__ import annotations

import logging

from grace.request_id import request_id_get


class RequestIDFilter(logging.Filter):
    """Adds ``record.request_id`` (``None`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_get()
        return True
