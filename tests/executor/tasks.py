"""Tasks for the executor tests; worker subprocesses import them (the repo root is the cwd).

Tasks that leave a trace append one line to a file named in their arguments (``O_APPEND``
writes of one short line are atomic), so a test can count how often each ran.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from executor.compat import task

logger = logging.getLogger("tests.executor")


def mark(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def marks(path: str | Path) -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []


@task()
def noop() -> None:
    return None


@task()
def echo(value: Any) -> Any:
    return value


@task()
def add(a: int, b: int) -> int:
    return a + b


@task(priority=0)
def record(path: str, tag: str) -> str:
    mark(path, tag)
    return tag


@task()
def sleep_record(path: str, tag: str, seconds: float) -> str:
    mark(path, f"start {tag}")
    time.sleep(seconds)
    mark(path, f"end {tag}")
    return tag


@task(timeout=1, max_attempts=1)
def hang(path: str) -> None:
    mark(path, "hang started")
    while True:  # a sync loop no thread could interrupt
        time.sleep(0.05)


@task(timeout=2, max_attempts=3)
def stubborn(path: str) -> None:
    """Ignores cancel requests: only its timeout stops it."""
    mark(path, "stubborn started")
    time.sleep(60)


@task(max_attempts=3)
def flaky(path: str, failures: int) -> int:
    """Fails ``failures`` times (counted in ``path``), then returns the attempt number."""
    mark(path, str(time.time()))
    runs = len(marks(path))
    if runs <= failures:
        raise RuntimeError(f"failure {runs}")
    return runs


@task(max_attempts=1)
def boom() -> None:
    raise ValueError("boom")


@task()
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@task(takes_context=True, timeout=20)
def cooperative(context: Any, path: str) -> str:
    """Runs until a cancel is requested, then stops by raising."""
    mark(path, f"started attempt {context.attempt}")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if context.cancel_requested:
            mark(path, "saw cancel")
            context.raise_if_cancelled()
        time.sleep(0.05)
    return "not cancelled"


@task(takes_context=True)
def attempt_number(context: Any) -> int:
    return int(context.attempt)


@task()
def log_line(message: str) -> None:
    logger.warning("task says %s", message)


@task()
def terminate_a_program() -> int | None:
    """Start a program and stop it with SIGTERM: its exit status (-15), or None if it
    ignored the signal (the worker's children must not pass theirs on)."""
    program = subprocess.Popen(["sleep", "30"])
    program.terminate()
    try:
        return program.wait(5)
    except subprocess.TimeoutExpired:
        program.kill()
        program.wait()
        return None
