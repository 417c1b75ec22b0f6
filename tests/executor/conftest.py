"""Fixtures for the executor tests: backend options, workers in-process and as processes.

Worker processes (``manage.py run_executor``) share the test's SQLite file, so the test
enqueues and inspects rows with the ORM while real processes claim and run them; such
tests use ``django_db(transaction=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from executor.models import TaskRecord
from executor.worker import Worker
from tests import timing
from tests.conftest import database_url
from tests.servers import ROOT, project_env

BASE_OPTIONS = {
    "max_pending": 10_000,
    "retain_finished": 1_000,
    "default_timeout": 30.0,
    "max_attempts": 3,
    "lease_seconds": 30.0,
    "shutdown_grace_seconds": 10.0,
    "retry_backoff": 0.2,
    "retry_backoff_max": 1.0,
}


@pytest.fixture
def executor_options(settings: Any) -> Callable[..., dict[str, Any]]:
    """``executor_options(max_pending=5)``: TASKS with these OPTIONS (and two queues)."""

    def apply(**options: Any) -> dict[str, Any]:
        merged = {**BASE_OPTIONS, **options}
        settings.TASKS = {
            "default": {
                "BACKEND": "executor.backend.ExecutorBackend",
                "QUEUES": ["default", "other"],
                "OPTIONS": merged,
            }
        }
        return merged

    apply()
    return apply


def run_worker(**kwargs: Any) -> int:
    """Run a worker in this process until its queues are empty (``burst``)."""
    kwargs.setdefault("concurrency", 2)
    kwargs.setdefault("interval", 0.05)
    return Worker(burst=True, **kwargs).run()


def wait_until(predicate: Callable[[], Any], timeout: float = 30, step: float = 0.05) -> Any:
    """``tests.timing.wait_until`` (timeout scaled by GRACE_TEST_TIME_FACTOR), positional."""
    return timing.wait_until(predicate, timeout=timeout, interval=step,
                             message="executor test condition")


def children_of(pid: int) -> dict[int, str]:
    """The processes ``pid`` started, each with its start time (a PID can be reused)."""
    pids = [int(child) for thread in Path(f"/proc/{pid}/task").iterdir()
            for child in (thread / "children").read_text().split()]
    return {child: _stat(child)[19] for child in pids}


def running(pid: int, started: str) -> bool:
    """The process ``pid`` that started at ``started`` still runs (a zombie does not)."""
    try:
        stat = _stat(pid)
    except FileNotFoundError:
        return False
    return stat[19] == started and stat[0] not in {"Z", "X"}


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: the state, then the fields that follow it."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def statuses() -> dict[str, int]:
    rows = TaskRecord.objects.values_list("status", flat=True)
    counts: dict[str, int] = {}
    for status in rows:
        counts[status] = counts.get(status, 0) + 1
    return counts


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The project's JSON log lines, from this process and its forked children."""
    from pythonjsonlogger.json import JsonFormatter

    [handler] = [h for h in logging.getLogger().handlers
                 if isinstance(h, logging.StreamHandler) and isinstance(h.formatter, JsonFormatter)]
    path = tmp_path / "json.log"
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - line-buffered: children write too
    previous = handler.setStream(stream)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    try:
        yield read
    finally:
        handler.setStream(previous)
        stream.close()


class WorkerProcess:
    """A real ``manage.py run_executor`` process on the test's database."""

    def __init__(
        self, env: dict[str, str], log: Path, args: list[str], *, session: bool = False
    ) -> None:
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "run_executor", *args],
            env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=session,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_started(self, timeout: float = 30) -> None:
        wait_until(lambda: "started: queues=" in self.log() or self.proc.poll() is not None,
                   timeout)
        assert self.proc.poll() is None, self.log()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """``kill -SIG -PGID``: the worker and its children (started with ``session=True``),
        as a terminal's Ctrl-C or systemd's ``KillMode=control-group`` signal them."""
        assert os.getpgid(self.pid) == self.pid, "start the worker with session=True"
        os.killpg(self.pid, signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``worker_process("--concurrency", "2", env={...})`` on the test database."""
    started: list[WorkerProcess] = []
    connections.close_all()  # the worker must see committed rows; no open transaction here

    def start(
        *args: str, env: dict[str, str] | None = None, session: bool = False
    ) -> WorkerProcess:
        base = project_env(tmp_path)
        base["DATABASE_URL"] = database_url("default")  # SQLite file or PostgreSQL
        base.update({"GRACE_LOG_LEVEL": "INFO", **(env or {})})
        worker = WorkerProcess(base, tmp_path / f"worker-{len(started)}.log",
                               ["--interval", "0.1", *args], session=session)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
