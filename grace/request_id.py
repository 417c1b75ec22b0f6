"""The request ID of the work in progress, kept in a contextvar.

A contextvar follows the request into ``sync_to_async`` threads and asyncio tasks,
so log lines, error bodies and enqueued tasks all see the same ID.
"""

from __future__ import annotations

import os
import random
import re
from contextvars import ContextVar, Token

HEADER = "X-Request-ID"
META_KEY = "HTTP_X_REQUEST_ID"
# An incoming ID is used only when it matches this; anything else is replaced.
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

_current: ContextVar[str | None] = ContextVar("grace_request_id", default=None)
# Request IDs label log lines; they are not secrets. A generator seeded from the OS
# makes 128 random bits without a system call per request (uuid4 makes one); it is
# reseeded in a forked child so that worker processes never share a sequence.
_random = random.Random(os.urandom(32))  # noqa: S311
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def request_id_new() -> str:
    """32 lowercase hex digits (128 random bits), like ``uuid4().hex``."""
    return f"{_random.getrandbits(128):032x}"


def request_id_accept(candidate: str | None) -> str:
    """Return ``candidate`` if it is a safe request ID, else a new one."""
    if candidate is not None and SAFE_ID.fullmatch(candidate):
        return candidate
    return request_id_new()


def request_id_get() -> str | None:
    return _current.get()


def request_id_set(value: str | None) -> Token[str | None]:
    return _current.set(value)


def request_id_reset(token: Token[str | None]) -> None:
    _current.reset(token)
