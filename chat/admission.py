"""Admission control: how many messages one process answers at once, and how many of
those one caller may hold.

A message past either bound is refused at once (``ChatRefused("busy")``: REST 503 with
``Retry-After``, a websocket error frame) instead of queueing behind the others: a burst
from one account can fill its own share (``GRACE_ADMISSION_TURNS_PER_CALLER``) and no
more, so everyone else's messages still get the stage threads and are inspected in full.
Counts are per process (each process has its own stage pool).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from chat.conf import chat_settings
from chat.exceptions import ChatRefused
from grace.auth import Owner

BUSY_RETRY_AFTER = 1


class Admission:
    """Turns in flight in this process, in all and per caller."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.by_caller: Counter[str] = Counter()

    @contextmanager
    def admit(self, owner: Owner) -> Iterator[None]:
        """Hold a place for one turn of ``owner``; ``ChatRefused("busy")`` when full."""
        caller = caller_key(owner)
        with self._lock:
            if self.total >= chat_settings.ADMISSION_TURNS:
                raise ChatRefused(
                    "Grace is answering as many messages as it can; try again in a moment.",
                    error="busy",
                    retry_after=BUSY_RETRY_AFTER,
                )
            if self.by_caller[caller] >= chat_settings.ADMISSION_TURNS_PER_CALLER:
                raise ChatRefused(
                    "You have too many messages being answered at once; wait for a reply "
                    "and try again.",
                    error="busy",
                    retry_after=BUSY_RETRY_AFTER,
                )
            self.total += 1
            self.by_caller[caller] += 1
        try:
            yield
        finally:
            with self._lock:
                self.total -= 1
                self.by_caller[caller] -= 1
                if self.by_caller[caller] <= 0:
                    del self.by_caller[caller]


def caller_key(owner: Owner) -> str:
    if owner.user_id is not None:
        return f"user:{owner.user_id}"
    return f"session:{owner.session_key}"


admission = Admission()
