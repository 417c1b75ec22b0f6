"""Fresh databases and servers for the benchmarks: Grace and its anchors side by side.

``fresh_databases(engine, tmp)`` gives the environment of a new, empty database set
(SQLite files in ``tmp``, or new PostgreSQL databases plus Redis, dropped afterwards);
``AnchorServer`` serves the minimal Django + ninja project of bench/anchor/ with daphne,
exactly as ``tests.servers.GraceServer`` serves Grace.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import GraceServer, manage  # noqa: E402

POSTGRES_URL = os.environ.get("GRACE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GRACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _postgres_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL.replace("postgres://", "postgresql://", 1),
                         autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


def postgres_and_redis_reachable() -> bool:
    try:
        import redis

        _postgres_admin("SELECT 1")
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
        return True
    except Exception:
        return False


@contextmanager
def fresh_databases(engine: str, tmp: Path, name: str) -> Iterator[dict[str, str]]:
    """Environment for one server on databases nobody else uses.

    ``sqlite``: ``<name>.sqlite3`` (and ``<name>-metrics.sqlite3``) in ``tmp``;
    ``postgres``: new databases ``bench_<name>_<random>`` on ``POSTGRES_URL``, dropped on
    exit, and Redis (a key prefix of its own) for the cache and the channel layer."""
    if engine == "sqlite":
        yield {"DATABASE_URL": f"sqlite:///{tmp / name}.sqlite3",
               "GRACE_METRICS_DATABASE_URL": f"sqlite:///{tmp / name}-metrics.sqlite3"}
        return
    base = f"bench_{name}_{uuid.uuid4().hex[:8]}".replace("-", "_")
    names = [base, f"{base}_metrics"]
    for db in names:
        _postgres_admin(f'CREATE DATABASE "{db}"')
    prefix = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield {"DATABASE_URL": f"{prefix}/{names[0]}",
               "GRACE_METRICS_DATABASE_URL": f"{prefix}/{names[1]}",
               "REDIS_URL": REDIS_URL}
    finally:
        for db in names:
            _postgres_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


class AnchorServer(GraceServer):
    """bench/anchor/ under daphne (one process), on its own database."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        super().__init__(tmp, {**env, "DJANGO_SETTINGS_MODULE": "bench.anchor.settings",
                               "PYTHONPATH": str(ROOT)},
                         migrate_first=False, app="bench.anchor.asgi:application")

    def __enter__(self) -> AnchorServer:
        manage(self.env, "migrate", "--noinput")
        super().__enter__()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"anchor exited early:\n{self.log()}")
            try:
                httpx.post(f"{self.url}/api/insert", json={"message": "ready"}, timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"anchor did not start in {timeout}s:\n{self.log()}")


def api_token(server: GraceServer, username: str = "bench") -> str:
    """A user and an API token on ``server``'s database."""
    script = ("from django.contrib.auth import get_user_model\n"
              "from grace.auth import api_token_create\n"
              f"user = get_user_model().objects.create_user({username!r})\n"
              "print(api_token_create(user=user, name='bench')[1])\n")
    return manage(server.env, "shell", "-c", script).stdout.strip().splitlines()[-1]
