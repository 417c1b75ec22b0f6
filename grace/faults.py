"""Fault injection for drills and tests: ``GRACE_FAULTS=respond=error,store=hang``.

Each entry names a fault point and a mode:

- ``error``: the point raises ``FaultInjected`` at once.
- ``timeout``: the point runs past its timeout (it gives up once its caller has), then raises.
- ``hang``: the point blocks its thread and ignores cancellation for
  ``GRACE_FAULT_HANG_SECONDS``, like a stuck driver call: its caller must not wait.

Points are registered by the parts that have them (the core registers ``audit``,
``events`` and ``metrics``; the chat app its pipeline stages) from ``AppConfig.ready()``.
An entry naming no registered point is reported by the system check ``grace.E020``.
This module is the only implementation of the three modes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning
from django.core.exceptions import ImproperlyConfigured

from grace.ops_conf import ops_settings

logger = logging.getLogger(__name__)

FAULT_MODES: tuple[str, ...] = ("error", "timeout", "hang")

Faults = dict[str, str]

_points: dict[str, str] = {}
# Set to let every hung fault return (tests set it at teardown).
_release = threading.Event()
# Hung faults of coroutines block threads of their own, never a shared pool's.
_stuck = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="grace-fault")


class InvalidFaults(ImproperlyConfigured):
    """``GRACE_FAULTS`` names an unknown fault point or mode, or is malformed."""


class FaultInjected(Exception):
    """Raised by a fault point that ``GRACE_FAULTS`` told to fail."""


def fault_point_register(name: str, description: str) -> None:
    """Declare a fault point (idempotent)."""
    _points[name] = description


def fault_points() -> dict[str, str]:
    """Every registered point and what failing it simulates."""
    return dict(_points)


def faults_parse(raw: str, *, points: Any = None) -> Faults:
    """Parse ``"point=mode,point=mode"``; raise ``InvalidFaults`` naming the problem.
    With ``points``, a name outside it is refused too."""
    faults: Faults = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, mode = (part.strip().lower() for part in item.partition("="))
        if not sep or not name or not mode:
            raise InvalidFaults(
                f"GRACE_FAULTS entry {item!r} is not 'point=mode' (for example 'store=hang')."
            )
        if points is not None and name not in points:
            raise InvalidFaults(
                f"GRACE_FAULTS names an unknown fault point {name!r}; "
                f"known points: {', '.join(sorted(points))}."
            )
        if mode not in FAULT_MODES:
            raise InvalidFaults(
                f"GRACE_FAULTS gives {name!r} the unknown mode {mode!r}; "
                f"modes: {', '.join(FAULT_MODES)}."
            )
        if name in faults and faults[name] != mode:
            raise InvalidFaults(f"GRACE_FAULTS gives {name!r} two modes.")
        faults[name] = mode
    return faults


def faults_describe(faults: Faults) -> str:
    return ",".join(f"{name}={mode}" for name, mode in sorted(faults.items()))


@functools.lru_cache(maxsize=16)
def _faults_of(raw: str) -> Faults:
    """``raw`` parsed once per distinct value (every stage asks, on every message)."""
    try:
        return faults_parse(raw)
    except InvalidFaults:
        return {}  # reported by the system check; no drill runs on a bad value


def _configured() -> Faults:
    raw = (getattr(settings, "GRACE", {}) or {}).get("FAULTS", "")
    return _faults_of(raw) if isinstance(raw, str) else dict(raw or {})


def faults_active() -> Faults:
    """The configured faults (``{}`` when none, or when the value does not parse)."""
    return dict(_configured())


def fault_mode(point: str) -> str | None:
    """The mode configured for ``point``, or None."""
    return _configured().get(point)


def fault_hang(seconds: float | None = None) -> None:
    """Block the calling thread like a stuck call, then fail."""
    _release.wait(ops_settings.FAULT_HANG_SECONDS if seconds is None else seconds)
    raise FaultInjected("injected fault: hang (released)")


def fault_inject(
    point: str, *, timeout: float, cancel: threading.Event | None = None
) -> None:
    """In a thread: act out ``point``'s configured mode, if any (else return at once).
    ``timeout`` is the caller's own bound; a ``timeout`` fault overruns it by a second
    (or returns as soon as ``cancel`` is set: the caller gave up; without ``cancel``, as
    soon as ``faults_release`` is called)."""
    mode = fault_mode(point)
    if mode is None:
        return
    if mode == "error":
        raise FaultInjected(f"injected fault: {point}=error")
    if mode == "timeout":
        # Until the caller gives up (``cancel``), or until the faults are released.
        (cancel or _release).wait(timeout + 1.0)
        raise FaultInjected(f"injected fault: {point}=timeout")
    fault_hang()


async def fault_inject_async(point: str, *, timeout: float) -> None:
    """On the event loop: the same three modes; a ``hang`` blocks a thread of its own
    (and ignores cancellation), the coroutine awaits it."""
    mode = fault_mode(point)
    if mode is None:
        return
    if mode == "error":
        raise FaultInjected(f"injected fault: {point}=error")
    if mode == "timeout":
        await asyncio.sleep(timeout + 1.0)
        raise FaultInjected(f"injected fault: {point}=timeout")
    await asyncio.get_running_loop().run_in_executor(_stuck, fault_hang)


def faults_release() -> None:
    """Let every thread blocked by a ``hang`` fault, or by a ``timeout`` fault without a
    ``cancel`` event, return (for test teardown)."""
    _release.set()


def faults_rearm() -> None:
    _release.clear()


def faults_check(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``grace.E020``: GRACE_FAULTS does not parse or names no registered point;
    ``grace.W021``: faults are on (never in production)."""
    raw = (getattr(settings, "GRACE", {}) or {}).get("FAULTS", "")
    try:
        faults = (
            faults_parse(raw, points=_points) if isinstance(raw, str)
            else faults_parse(faults_describe(dict(raw or {})), points=_points)
        )
    except InvalidFaults as exc:
        return [Error(str(exc), id="grace.E020")]
    if faults:
        return [Warning(
            f"GRACE_FAULTS is on ({faults_describe(faults)}): these points fail on purpose.",
            hint="Fault injection is for drills and tests; unset GRACE_FAULTS in production.",
            id="grace.W021",
        )]
    return []


def faults_health() -> dict[str, Any]:
    """The ``faults`` entry of /api/health while GRACE_FAULTS is on ("ok": a drill must
    not take the server out of its load balancer)."""
    faults = faults_active()
    return {
        "status": "ok",
        "active": bool(faults),
        "faults": faults_describe(faults),
        "warning": "GRACE_FAULTS is on: stages fail on purpose." if faults else "",
    }
