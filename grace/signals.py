"""Receivers that record what Django itself reports."""

from __future__ import annotations

import sys
from typing import Any

from django.core.signals import got_request_exception
from django.dispatch import receiver

from grace.errorlog import errorlog_record


@receiver(got_request_exception, dispatch_uid="grace.signals.record_unhandled")
def record_unhandled(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """An exception escaped a view or middleware outside ninja (admin, pages)."""
    exc = sys.exc_info()[1]
    if exc is not None:
        errorlog_record(exc=exc, request=request)
