"""A circuit breaker per reply backend, per process.

After ``GRACE_BREAKER_FAILURES`` consecutive failures the circuit opens: for
``GRACE_BREAKER_RESET_SECONDS`` the backend is not called at all and the fallback
answers at once (flag ``circuit_open``). Then one caller is let through as a probe
(half-open): its success closes the circuit, its failure opens it for another period.
While the probe runs, everyone else still gets the fallback. A probe that is cancelled
(the client went away) decides nothing; the next caller probes.

State changes happen under a ``threading.Lock`` and never await, so one breaker is safe
from any thread and any event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from chat.conf import chat_settings

logger = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failures = max(1, failures)
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._count = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.reset_seconds:
                return HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """True when the backend may be called now (closed, or this caller is the probe)."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                if self._clock() - self._opened_at < self.reset_seconds:
                    return False
                self._state = HALF_OPEN
                self._probing = False
            if self._probing:
                return False
            self._probing = True
            logger.info("circuit %s half-open: one probe goes through", self.name)
            return True

    def success(self) -> None:
        with self._lock:
            if self._state != CLOSED:
                logger.info("circuit %s closed: the probe succeeded", self.name)
            self._state = CLOSED
            self._count = 0
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._count += 1
            if self._state == HALF_OPEN or self._count >= self.failures:
                if self._state != OPEN:
                    logger.warning(
                        "circuit %s open for %ss after %s consecutive failures",
                        self.name,
                        self.reset_seconds,
                        self._count,
                    )
                self._state = OPEN
                self._opened_at = self._clock()
                self._probing = False

    def release(self) -> None:
        """The call was abandoned (cancelled): it counts neither way."""
        with self._lock:
            self._probing = False


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_get(name: str) -> CircuitBreaker:
    """The process-wide breaker of backend ``name``, made from the current settings."""
    with _breakers_lock:
        breaker = _breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                name,
                failures=chat_settings.BREAKER_FAILURES,
                reset_seconds=chat_settings.BREAKER_RESET_SECONDS,
            )
            _breakers[name] = breaker
        return breaker


def breaker_reset_all() -> None:
    """Forget every breaker's state (tests, and a settings change)."""
    with _breakers_lock:
        _breakers.clear()


@receiver(setting_changed, dispatch_uid="chat.backends.breaker.reset")
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "GRACE_CHAT":
        breaker_reset_all()
