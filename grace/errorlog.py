"""Writes unhandled exceptions to the ``ErrorLog`` table without ever raising.

The write runs in a short-lived thread with its own database connection, joined
with a timeout: it works the same from sync and async code, and a database that is
down or locked delays a 500 by at most ``GRACE_ERROR_LOG_TIMEOUT`` seconds. When the
row cannot be written, the exception goes to stderr through logging instead.
"""

from __future__ import annotations

import logging
import threading
import traceback as tb
from types import TracebackType
from typing import Any

from django.conf import settings
from django.db import connections

from grace.request_id import request_id_get

logger = logging.getLogger(__name__)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def errorlog_record(
    *,
    exc: BaseException,
    request: Any = None,
    status: int = 500,
    request_id: str | None = None,
) -> bool:
    """Record ``exc``; return whether the row was written. Never raises."""
    try:
        fields = _fields(exc=exc, request=request, status=status, request_id=request_id)
    except Exception:  # pragma: no cover - building plain strings
        logger.exception("could not describe an exception for the error log")
        return False
    outcome: dict[str, bool] = {}
    worker = threading.Thread(
        target=_write, args=(fields, outcome), name="grace-errorlog", daemon=True
    )
    worker.start()
    worker.join(settings.GRACE_ERROR_LOG_TIMEOUT)
    if outcome.get("ok"):
        return True
    logger.error(
        "error log unavailable; unhandled %s: %s\n%s",
        fields["exception_class"],
        fields["message"],
        fields["traceback"],
        extra={"request_id": fields["request_id"]},
    )
    return False


def _fields(
    *, exc: BaseException, request: Any, status: int, request_id: str | None
) -> dict[str, Any]:
    user = getattr(request, "user", None) if request is not None else None
    user_id = None
    try:
        if user is not None and user.is_authenticated:
            user_id = user.pk
    except Exception:  # noqa: S110 - a lazy user that fails to load is no user
        pass
    return {
        "request_id": (
            request_id or getattr(request, "request_id", None) or request_id_get() or ""
        )[:64],
        "method": (getattr(request, "method", "") or "")[:16],
        "path": (getattr(request, "path", "") or "")[:2048],
        "status": status,
        "exception_class": f"{type(exc).__module__}.{type(exc).__qualname__}"[:255],
        "message": str(exc)[:10000],
        "traceback": "".join(tb.format_exception(type(exc), exc, exc.__traceback__)),
        "user_id": user_id,
    }


def _write(fields: dict[str, Any], outcome: dict[str, bool]) -> None:
    from grace.models import ErrorLog

    try:
        row = ErrorLog.objects.create(**fields)
        _prune(newest_id=row.pk)
        outcome["ok"] = True
    except Exception as write_error:
        logger.warning("could not write the error log: %s", write_error)
    finally:
        connections.close_all()


def _prune(*, newest_id: int) -> None:
    """Keep the newest ``GRACE_ERROR_LOG_MAX_ROWS`` rows."""
    from grace.models import ErrorLog

    keep = settings.GRACE_ERROR_LOG_MAX_ROWS
    cutoff = (
        ErrorLog.objects.filter(pk__lte=newest_id).order_by("-pk").values_list("pk", flat=True)[
            keep : keep + 1
        ]
    )
    boundary = list(cutoff)
    if boundary:
        ErrorLog.objects.filter(pk__lte=boundary[0]).delete()
