"""Health checks: each database (and, as later parts register them, each dependency).

Every check runs in a daemon thread of its own, all at once, and the whole round is
bounded by ``GRACE_HEALTH_TIMEOUT``: a hung dependency is reported as timed out
without delaying the answer or holding up shutdown. A check still hung from an
earlier round is not started again (so a dead dependency cannot pile up threads);
it reports timed out at once until it returns.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

Check = Callable[[], dict[str, Any]]
_extra_checks: dict[str, Check] = {}
_running: dict[str, threading.Thread] = {}
_running_lock = threading.Lock()


def health_register(name: str, check: Check) -> None:
    """Add a named check: it returns a dict with ``status`` "ok" or "error" (and any
    other JSON-able facts); raising counts as "error" with the exception's class and text."""
    _extra_checks[name] = check


def health_unregister(name: str) -> None:
    _extra_checks.pop(name, None)


def _database_check(alias: str) -> Check:
    def check() -> dict[str, Any]:
        connection = connections[alias]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            return {"status": "ok", "vendor": connection.vendor}
        finally:
            connection.close()

    return check


def health_checks() -> dict[str, Check]:
    checks: dict[str, Check] = {
        f"database:{alias}": _database_check(alias) for alias in settings.DATABASES
    }
    checks.update(_extra_checks)
    return checks


def health_collect(*, timeout: float | None = None) -> dict[str, dict[str, Any]]:
    """Run every check; return ``{name: {"status": "ok"|"error", ...}}``."""
    timeout = settings.GRACE_HEALTH_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    results: dict[str, dict[str, Any]] = {}
    started: dict[str, threading.Thread] = {}
    for name, check in health_checks().items():
        with _running_lock:
            previous = _running.get(name)
            if previous is not None and previous.is_alive():
                results[name] = {"status": "error", "error": "timed out (still running)"}
                continue
            context = contextvars.copy_context()
            thread = threading.Thread(
                target=context.run,
                args=(_run_one, name, check, results),
                name=f"grace-health-{name}",
                daemon=True,
            )
            _running[name] = thread
        thread.start()
        started[name] = thread
    for name, thread in started.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            results[name] = {"status": "error", "error": f"timed out after {timeout}s"}
    return {name: results[name] for name in sorted(results)}


def _run_one(name: str, check: Check, results: dict[str, dict[str, Any]]) -> None:
    started = time.perf_counter()
    try:
        result = dict(check())
    except Exception as exc:
        logger.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
    result.setdefault("status", "error")
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    results.setdefault(name, result)
