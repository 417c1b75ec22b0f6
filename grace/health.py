"""Health checks: each database (and, as later parts register them, each dependency)."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

Check = Callable[[], dict[str, Any]]
_extra_checks: dict[str, Check] = {}
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="grace-health")


def health_register(name: str, check: Check) -> None:
    """Add a named check; it returns a dict with ``status`` "ok" or "error"."""
    _extra_checks[name] = check


def _database_check(alias: str) -> Check:
    def check() -> dict[str, Any]:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            return {"status": "ok", "vendor": connections[alias].vendor}
        finally:
            connections[alias].close()

    return check


def health_collect() -> dict[str, dict[str, Any]]:
    """Run every check in its own thread, each bounded by ``GRACE_HEALTH_TIMEOUT``."""
    checks: dict[str, Check] = {
        f"database:{alias}": _database_check(alias) for alias in settings.DATABASES
    }
    checks.update(_extra_checks)
    futures = {name: _pool.submit(check) for name, check in checks.items()}
    results: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=settings.GRACE_HEALTH_TIMEOUT)
        except concurrent.futures.TimeoutError:
            results[name] = {"status": "error", "error": "timed out"}
        except Exception as exc:
            results[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
    return results
