"""Tasks of the scale tests; worker processes import them (the repo root is their cwd).

Each run appends one line ``<tag> <attempt> <worker pid>`` to a file (``O_APPEND`` writes
of a short line are atomic), so a test counts how often, and where, every task ran.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from executor.compat import task


def mark(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@task(takes_context=True)
def tracked(context: Any, path: str, tag: str) -> str:
    mark(path, f"{tag} {context.attempt} {os.getppid()}")
    return tag


@task(takes_context=True, timeout=1, max_attempts=2)
def soak(context: Any, path: str, tag: str, kind: str) -> str:
    """``ok`` returns, ``fail`` raises on every attempt, ``flaky`` on the first one only,
    ``slow`` overruns its 1 s timeout on every attempt."""
    mark(path, f"{tag} {context.attempt} {kind}")
    if kind == "fail" or (kind == "flaky" and context.attempt == 1):
        raise RuntimeError(f"{tag}: planned failure")
    if kind == "slow":
        time.sleep(5)
    return tag


@task()
def noop(*args: Any) -> None:
    return None


def soak_kind(rng: random.Random) -> str:
    roll = rng.random()
    return "slow" if roll < 0.002 else "fail" if roll < 0.05 else "flaky" if roll < 0.15 else "ok"
