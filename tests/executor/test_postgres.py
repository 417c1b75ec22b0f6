"""The PostgreSQL path: a fresh database, the bound under concurrent enqueues, several
worker processes claiming with ``FOR UPDATE SKIP LOCKED``."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executor import tasks
from tests.executor.conftest import wait_until
from tests.servers import manage, project_env, scratch_postgres_database

pytestmark = pytest.mark.slow

ENQUEUE = """
import json, threading
from datetime import timedelta
from django.db import connections
from django.utils import timezone
from executor.exceptions import QueueFull
from tests.executor.tasks import record
later = record.using(run_after=timezone.now() + timedelta(hours=1))  # due once all workers run
refused = []
def run(n):
    for i in range(100):
        try:
            later.enqueue({log!r}, f"t{{n}}-{{i}}")
        except QueueFull:
            refused.append(1)
    connections.close_all()
threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({{"refused": len(refused)}}))
"""


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    """A uniquely named, empty database on the test server; dropped afterwards."""
    with scratch_postgres_database(postgres_url, "grace_executor") as url:
        yield url


def pg_rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://")) as conn:
        return conn.execute(sql).fetchall()


def pg_execute(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://")) as conn:
        conn.execute(sql)


def test_postgres_bound_and_several_workers(pg_database, worker_process, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": pg_database,
        "GRACE_EXECUTOR_MAX_PENDING": "300",
        "GRACE_EXECUTOR_RETAIN_FINISHED": "1000",
        "GRACE_EXECUTOR_LEASE_SECONDS": "3",
    }
    full_env = project_env(tmp_path, env)
    manage(full_env, "migrate", "executor", "--noinput")
    log = str(tmp_path / "runs")
    out = manage(full_env, "shell", "-c", ENQUEUE.format(log=log)).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"refused": 100}
    assert pg_rows(pg_database, "SELECT count(*) FROM executor_taskrecord") == [(300,)]

    workers = [worker_process("--concurrency", "2", "--batch", "10", env=env) for _ in range(3)]
    # The tasks become due only once every worker polls: the first one up would otherwise
    # run all 300 (instant tasks) before the others start, on a loaded machine.
    for worker in workers:
        worker.wait_started()
    pg_execute(pg_database, "UPDATE executor_taskrecord SET run_after = now()")
    wait_until(
        lambda: pg_rows(pg_database, "SELECT count(*) FROM executor_taskrecord "
                                     "WHERE status = 'SUCCESSFUL'") == [(300,)],
        timeout=60, step=0.2,
    )
    runs = Counter(tasks.marks(log))
    assert len(runs) == 300 and set(runs.values()) == {1}
    workers_used = pg_rows(
        pg_database,
        "SELECT count(DISTINCT worker_id) FROM executor_taskrecord WHERE attempts = 1",
    )
    assert workers_used[0][0] >= 2
    for worker in workers:
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        assert "Traceback" not in worker.log()


def test_the_queue_room_function_comes_and_goes_with_its_migration(
    pg_database, tmp_path: Path
) -> None:
    """Enqueue on PostgreSQL calls ``executor_queue_room`` (migration 0002); migrating back
    drops it, migrating forward makes it again, and the bound holds through it."""
    env = project_env(tmp_path, {"DATABASE_URL": pg_database, "GRACE_EXECUTOR_MAX_PENDING": "2"})
    functions = "SELECT count(*) FROM pg_proc WHERE proname = 'executor_queue_room'"
    manage(env, "migrate", "executor", "--noinput")
    assert pg_rows(pg_database, functions) == [(1,)]
    manage(env, "migrate", "executor", "0001", "--noinput")
    assert pg_rows(pg_database, functions) == [(0,)]
    manage(env, "migrate", "executor", "--noinput")
    script = (
        "from executor.exceptions import QueueFull\n"
        "from tests.executor.tasks import noop\n"
        "outcomes = []\n"
        "for _ in range(3):\n"
        "    try:\n"
        "        noop.enqueue(); outcomes.append('written')\n"
        "    except QueueFull:\n"
        "        outcomes.append('full')\n"
        "print(outcomes)\n"
    )
    out = manage(env, "shell", "-c", script).stdout
    assert out.strip().splitlines()[-1] == "['written', 'written', 'full']"
    assert pg_rows(pg_database, "SELECT count(*) FROM executor_taskrecord") == [(2,)]
