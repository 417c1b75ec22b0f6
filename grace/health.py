"""Health checks: each database, and each check the core and the apps register.

Every check runs in a daemon thread, all at once, and a round is bounded by
``GRACE_HEALTH_TIMEOUT``: a hung dependency is reported as timed out without delaying
the answer or holding up shutdown. Each check runs at most once at a time: concurrent
rounds (a load balancer and a person, or many polls under load) share the run in
progress, so a dead dependency cannot pile up threads and a busy service is not
hammered with checks.
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

from grace.ops_conf import ops_settings

logger = logging.getLogger(__name__)

Check = Callable[[], dict[str, Any]]
_extra_checks: dict[str, Check] = {}
_runs_lock = threading.Lock()


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


class _Run:
    """One execution of one check, shared by every round that asks while it runs."""

    def __init__(self, name: str, check: Check) -> None:
        self.done = threading.Event()
        self.result: dict[str, Any] = {}
        self.started = time.monotonic()
        context = contextvars.copy_context()
        self.thread = threading.Thread(
            target=context.run,
            args=(self._run, name, check),
            name=f"grace-health-{name}",
            daemon=True,
        )

    def _run(self, name: str, check: Check) -> None:
        started = time.perf_counter()
        try:
            result = dict(check())
        except Exception as exc:
            logger.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
        finally:
            # This thread's own connections (a check that read the database, e.g. the
            # queue's): left open they outlive the thread and hold a server session.
            try:
                connections.close_all()
            except Exception as exc:  # a broken connection: the check already said so
                logger.debug("health check %s: closing its connections: %s", name, exc)
        result.setdefault("status", "error")
        result["ms"] = round((time.perf_counter() - started) * 1000, 1)
        self.result = result
        self.done.set()


_runs: dict[str, _Run] = {}


def _run_for(name: str, check: Check) -> _Run:
    with _runs_lock:
        run = _runs.get(name)
        if run is None or run.done.is_set():
            run = _Run(name, check)
            _runs[name] = run
            run.thread.start()
        return run


def health_collect(*, timeout: float | None = None) -> dict[str, dict[str, Any]]:
    """Run every check; return ``{name: {"status": "ok"|"error", ...}}``, sorted by name."""
    timeout = ops_settings.HEALTH_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    runs = {name: _run_for(name, check) for name, check in health_checks().items()}
    results: dict[str, dict[str, Any]] = {}
    for name in sorted(runs):
        run = runs[name]
        if run.done.wait(max(0.0, deadline - time.monotonic())):
            results[name] = dict(run.result)
        else:
            running_for = time.monotonic() - run.started
            results[name] = {
                "status": "error",
                "error": f"timed out after {timeout}s (running for {running_for:.1f}s)",
            }
    return results
