"""Writes unhandled exceptions to the ``ErrorLog`` table without ever raising.

Only server faults are recorded: an exception a client can cause (one that carries a
4xx status, Django's ``BadRequest``/``SuspiciousOperation``/``PermissionDenied``/
``Http404``, a validation error, bad JSON) is not. Repeats coalesce: one row per
fingerprint (exception class, the line that raised it, the route), whose ``count`` and
``last_seen`` grow, so no burst of one error can push the others out of the
``GRACE_ERROR_LOG_MAX_ROWS`` it keeps. The UPDATE-or-INSERT is race-safe: the
fingerprint is unique, and a writer that loses the race to insert counts on the
winner's row.

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
import hashlib
import logging
import threading
import traceback as tb
from typing import Any

from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.db import IntegrityError, connections, transaction
from django.db.models import F, Q
from django.dispatch import Signal
from django.http import Http404, HttpRequest
from django.utils import timezone
from ninja.errors import ValidationError as NinjaValidationError

from grace.json_body import InvalidJson
from grace.models import ErrorLog
from grace.ops_conf import ops_settings
from grace.request_id import request_id_get

logger = logging.getLogger(__name__)

# Exceptions a client causes by what it sends; never a row.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    BadRequest,
    SuspiciousOperation,  # RequestDataTooBig, DisallowedHost, ...
    PermissionDenied,
    Http404,
    NinjaValidationError,
    InvalidJson,
)
# Sent (from the writer thread) for each repeat of a recorded error, with ``row_id``,
# ``count`` and ``exception_class``: the first occurrence is the row's ``post_save``.
error_recurred = Signal()
# A writer that lost the race to insert a fingerprint retries its UPDATE this often.
UPSERT_ATTEMPTS = 3


def errorlog_is_client_error(exc: BaseException, *, status: int = 500) -> bool:
    """True for an error the client caused: a status below 500 (given, or carried by
    the exception as ``status_code``/``status``), or one of ``CLIENT_ERRORS``."""
    if status < 500:
        return True
    for name in ("status_code", "status"):
        carried = getattr(exc, name, None)
        if isinstance(carried, int) and not isinstance(carried, bool):
            return 400 <= carried < 500
    return isinstance(exc, CLIENT_ERRORS)


def errorlog_record(
    *,
    exc: BaseException,
    request: Any = None,
    status: int = 500,
    request_id: str | None = None,
    wait: bool | None = None,
) -> bool | None:
    """Record ``exc`` (a new row, or one more on its fingerprint's row); never raises.

    Returns True when the row was written, False when it could not be (the exception
    went to stderr), None when it did not wait for the write or when ``exc`` is the
    client's error (nothing to record). ``wait`` defaults to "unless called from a
    running event loop".
    """
    try:
        if errorlog_is_client_error(exc, status=status):
            logger.info("not an error log row (a client error): %s", type(exc).__name__)
            return None
        fields = _fields(exc=exc, request=request, status=status, request_id=request_id)
        fingerprint = _fingerprint(exc=exc, request=request, fields=fields)
        if wait is None:
            wait = not _in_event_loop()
        written: dict[str, bool] = {}
        context = contextvars.copy_context()
        worker = threading.Thread(
            target=context.run,
            args=(_write, fields, fingerprint, request, written),
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


def _fingerprint(*, exc: BaseException, request: Any, fields: dict[str, Any]) -> str:
    """Exception class, the frame that raised it, the route: what makes two errors one."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = (
        f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}:{frame.tb_frame.f_code.co_name}"
        if frame is not None
        else ""
    )
    match = getattr(request, "resolver_match", None)
    if match is not None:
        route = f"{fields['method']} {match.route}"
    elif isinstance(request, HttpRequest):
        route = f"{fields['method']} <unrouted>"  # a client picks the path: not part of it
    else:
        route = f"{fields['method']} {fields['path']}"  # a consumer's fixed path, or none
    key = "\n".join((fields["exception_class"], where, route))
    return hashlib.sha256(key.encode("utf-8", "backslashreplace")).hexdigest()


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


def _write(
    fields: dict[str, Any], fingerprint: str, request: Any, written: dict[str, bool]
) -> None:
    try:
        row_id, count = errorlog_upsert(
            fields={**fields, "user_id": _user_id(request)}, fingerprint=fingerprint
        )
        if count == 1:
            _prune(newest_id=row_id)
        else:
            error_recurred.send(
                sender=ErrorLog,
                row_id=row_id,
                count=count,
                exception_class=fields["exception_class"],
                request_id=fields["request_id"],
            )
            logger.error(
                "error log: %s again (%s times) on row %s",
                fields["exception_class"],
                count,
                row_id,
                extra={"request_id": fields["request_id"] or None, "path": fields["path"]},
            )
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


def errorlog_upsert(*, fields: dict[str, Any], fingerprint: str) -> tuple[int, int]:
    """One more occurrence of ``fingerprint``: ``(row id, its count)``; a count of 1 is
    a new row. Race-safe on both engines: UPDATE first; when no row has the fingerprint,
    INSERT; when a concurrent writer inserted it first (unique violation), UPDATE again."""
    for _ in range(UPSERT_ATTEMPTS):
        now = timezone.now()
        rows = ErrorLog.objects.filter(fingerprint=fingerprint)
        if rows.update(**fields, last_seen=now, count=F("count") + 1):
            found = rows.values_list("pk", "count").first()
            if found is not None:
                return found
            continue  # pruned between the two statements: insert it again
        try:
            with transaction.atomic():
                row = ErrorLog.objects.create(
                    **fields, fingerprint=fingerprint, last_seen=now, count=1
                )
            return row.pk, 1
        except IntegrityError:
            continue
    raise IntegrityError(f"error log fingerprint {fingerprint} could not be written")


def errorlog_prune(*, newest_id: int | None = None) -> int:
    """Delete all but the ``GRACE_ERROR_LOG_MAX_ROWS`` most recently seen rows; return
    how many went."""
    return _prune(newest_id=newest_id)


def _prune(*, newest_id: int | None) -> int:
    """Rows inserted after ``newest_id`` (by concurrent writers) are not counted."""
    keep = ops_settings.ERROR_LOG_MAX_ROWS
    rows = ErrorLog.objects.all()
    if newest_id is not None:
        rows = rows.filter(pk__lte=newest_id)
    boundary = rows.order_by("-last_seen", "-pk").values_list("last_seen", "pk")[keep : keep + 1]
    found = list(boundary)
    if not found:
        return 0
    last_seen, pk = found[0]
    older = Q(last_seen__lt=last_seen) | Q(last_seen=last_seen, pk__lte=pk)
    if newest_id is not None:
        older &= Q(pk__lte=newest_id)
    deleted, _ = ErrorLog.objects.filter(older).delete()
    return deleted
