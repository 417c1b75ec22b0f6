"""Real server and worker processes for tests and benchmarks.

``GraceServer`` migrates fresh SQLite files (or uses the URLs given), starts daphne
on a free loopback port and waits until ``/api/health`` answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project_env(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process with its own database files in ``tmp``."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "grace.settings",
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "GRACE_METRICS_DATABASE_URL": f"sqlite:///{tmp / 'metrics.sqlite3'}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def migrate(env: dict[str, str]) -> None:
    manage(env, "migrate", "--noinput")
    manage(env, "migrate", "--noinput", "--database", "metrics")


@contextmanager
def scratch_postgres_database(postgres_url: str, prefix: str = "grace") -> Iterator[str]:
    """A uniquely named, empty database on the server of ``postgres_url``; yields its
    URL (``postgres://...``) and drops it afterwards, whoever is still connected."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server = postgres_url.replace("postgres://", "postgresql://")
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class GraceServer:
    """A daphne process serving grace.asgi on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        tmp: Path,
        env: dict[str, str] | None = None,
        *,
        migrate_first: bool = True,
        app: str = "grace.asgi:application",
    ) -> None:
        self.tmp = tmp
        self.env = project_env(tmp, env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.migrate_first = migrate_first
        self.app = app
        self.log_path = tmp / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> GraceServer:
        if self.migrate_first:
            migrate(self.env)
        self._log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            # -v 0: no plain-text access log; Grace writes its own JSON access lines.
            [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(self.port),
             self.app],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                httpx.get(f"{self.url}/api/health", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
