"""Fault injection for drills and tests: ``GRACE_FAULTS=respond=error,store=hang``.

Each entry names a fault point and a mode:

- ``error``: the stage raises at once.
- ``timeout``: the stage runs past its timeout (it gives up once the pipeline has).
- ``hang``: the stage blocks its thread and ignores cancellation for
  ``GRACE_FAULT_HANG_SECONDS``, like a stuck driver call: the pipeline must not wait.

This module is imported by grace/settings.py, so it imports nothing from Django but
the exception class. Later parts add their fault points to ``FAULT_POINTS``.
"""

from __future__ import annotations

import threading

from django.core.exceptions import ImproperlyConfigured

FAULT_POINTS: tuple[str, ...] = ("inspect", "recall", "respond", "store", "followup")
# The operations parts (grace/audit_writer.py, grace/events.py, grace/metrics/buffer.py).
FAULT_POINTS += ("audit", "events", "metrics")
FAULT_MODES: tuple[str, ...] = ("error", "timeout", "hang")

Faults = dict[str, str]

# Set to let every hung fault return (tests set it at teardown).
_release = threading.Event()


class InvalidFaults(ImproperlyConfigured):
    """``GRACE_FAULTS`` names an unknown fault point or mode, or is malformed."""


class FaultInjected(Exception):
    """Raised by a stage that GRACE_FAULTS told to fail."""


def faults_parse(raw: str, *, points: tuple[str, ...] = FAULT_POINTS) -> Faults:
    """Parse ``"stage=mode,stage=mode"``; raise ``InvalidFaults`` naming the problem."""
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
        if name not in points:
            raise InvalidFaults(
                f"GRACE_FAULTS names an unknown fault point {name!r}; "
                f"known points: {', '.join(points)}."
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


def fault_hang(seconds: float) -> None:
    """Block the calling thread like a stuck call, then fail."""
    _release.wait(seconds)
    raise FaultInjected("injected fault: hang (released)")


def fault_wait(cancel: threading.Event, seconds: float) -> None:
    """Overrun a timeout cooperatively: wait until the caller gave up, then fail."""
    cancel.wait(seconds)
    raise FaultInjected("injected fault: timeout")


def faults_release() -> None:
    """Let every thread blocked by a ``hang`` fault return (for test teardown)."""
    _release.set()


def faults_rearm() -> None:
    _release.clear()
