"""Writes unhandled exceptions to the ``ErrorLog`` table without ever raising.

The write runs in a short-lived thread with its own database connection (and the
caller's contextvars, so its log lines carry the request ID). From sync code the
caller waits for it at most ``GRACE_ERROR_LOG_TIMEOUT`` seconds, so the row exists
when the client reads its 500; from a running event loop it never waits, so a slow
or locked database cannot stall other requests. When the row cannot be written the
exception, with its traceback, goes to stderr as a JSON log line instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import traceback as tb
from typing import Any

from django.db import connections

from grace.models import ErrorLog
from grace.ops_conf import ops_settings
from grace.request_id import request_id_get

logger = logging.getLogger(__name__)


def errorlog_record(
    *,
    exc: BaseException,
    request: Any = None,
    status: int = 500,
    request_id: str | None = None,
    wait: bool | None = None,
) -> bool | None:
    """Record ``exc``; never raises.

    Returns True when the row was written, False when it could not be (the exception
    went to stderr), None when it did not wait for the write. ``wait`` defaults to
    "unless called from a running event loop".
    """
    try:
        fields = _fields(exc=exc, request=request, status=status, request_id=request_id)
        if wait is None:
            wait = not _in_event_loop()
        written: dict[str, bool] = {}
        context = contextvars.copy_context()
        worker = threading.Thread(
            target=context.run,
            args=(_write, fields, request, written),
            name="grace-errorlog",
            daemon=True,
        )
        worker.start()
    except Exception:
        logger.exception("could not record an exception in the error log")
        return False
    if not wait:
        return None
    worker.join(ops_settings.ERROR_LOG_TIMEOUT)
    if "ok" not in written:
        logger.warning(
            "error log write still pending after %ss (request %s)",
            ops_settings.ERROR_LOG_TIMEOUT,
            fields["request_id"],
        )
        return False
    return written["ok"]


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _fields(
    *, exc: BaseException, request: Any, status: int, request_id: str | None
) -> dict[str, Any]:
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
    }


def _user_id(request: Any) -> Any:
    """The signed-in user's pk, resolved in the writer thread: loading a lazy user may
    query the database, which an event loop must not do."""
    try:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return user.pk
    except Exception:  # noqa: S110 - a user that fails to load is no user
        pass
    return None


def _write(fields: dict[str, Any], request: Any, written: dict[str, bool]) -> None:
    try:
        row = ErrorLog.objects.create(**fields, user_id=_user_id(request))
        _prune(newest_id=row.pk)
        written["ok"] = True
    except Exception as write_error:
        written["ok"] = False
        logger.error(
            "error log unavailable (%s: %s); unhandled %s: %s",
            type(write_error).__name__,
            write_error,
            fields["exception_class"],
            fields["message"],
            extra={
                "request_id": fields["request_id"] or None,
                "method": fields["method"],
                "path": fields["path"],
                "status": fields["status"],
                "traceback": fields["traceback"],
            },
        )
    finally:
        connections.close_all()


def errorlog_prune(*, newest_id: int | None = None) -> int:
    """Delete all but the newest ``GRACE_ERROR_LOG_MAX_ROWS`` rows; return how many went."""
    return _prune(newest_id=newest_id)


def _prune(*, newest_id: int | None) -> int:
    keep = ops_settings.ERROR_LOG_MAX_ROWS
    rows = ErrorLog.objects.all()
    if newest_id is not None:
        rows = rows.filter(pk__lte=newest_id)
    boundary = list(rows.order_by("-pk").values_list("pk", flat=True)[keep : keep + 1])
    if not boundary:
        return 0
    deleted, _ = ErrorLog.objects.filter(pk__lte=boundary[0]).delete()
    return deleted
