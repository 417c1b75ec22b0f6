"""Executor throughput against django-tasks-db's ``db_worker``, measured in the same run.

For each database (SQLite; PostgreSQL when reachable, with the Redis channel layer when
Redis is reachable) and each implementation, on a fresh fully migrated database (and its
metrics database beside it): enqueue N no-op tasks one by one through the Tasks API
(enqueue tasks/s: the best chunk of 250, best of the rounds), then start 1 or 2 worker
processes and time the drain, from the first task started to the moment the last one is
seen finished (drain tasks/s). Prints the
figures, the ratios, and a last line ``SUMMARY {json}`` with the ratios for
bench/run_all.py.

What is measured is the shipped defaults: the project's settings as a user gets them, the
operations observers of the Tasks API's signals on (grace/observers.py: metrics, events
when someone listens; docs/operations.md "What is audited"), the default database
connection settings. Both backends send those signals for each task, so the observers run
for db_worker too. ``--observers-off`` (``GRACE_DISABLED_FEATURES=audit,events,metrics``)
and ``--persistent-connections`` (``GRACE_DB_CONN_MAX_AGE=600``, db_worker's best case:
with the default of 0 it reconnects after every task) are for diagnosis. Tasks are held
back until every worker process is up, and the configurations alternate over ``--rounds``
rounds (the best of each is kept), so a busy moment on a shared machine does not land on
one of them only.

The baseline is not a project dependency; ``make .venv/.installed-bench`` installs it::

    .venv/bin/python bench/bench_executor.py [--rounds 2] [--databases sqlite,postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import project_env  # noqa: E402

TABLES = {"executor": "executor_taskrecord", "db": "django_tasks_database_dbtaskresult"}
WITH_OBSERVERS = True  # --observers-off: a diagnosis (see the docstring)
PERSISTENT = False  # --persistent-connections: a diagnosis
REDIS: str | None = None  # the channel layer of the PostgreSQL runs, when reachable
READY_LINE = {"executor": "started: queues=", "db": "Starting worker"}
HOLD = datetime(9000, 1, 1, tzinfo=UTC)  # run_after while the workers start
POSTGRES_URL = os.environ.get("GRACE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL") or os.environ.get("GRACE_TEST_REDIS_URL",
                                                           "redis://127.0.0.1:6379/0")


ENQUEUE_CHUNK = 250  # enqueues per timed chunk


def enqueue_main(count: int) -> None:
    """Child mode: enqueue ``count`` no-op tasks, print the rate as JSON: the best of its
    chunks of ``ENQUEUE_CHUNK`` (a busy moment of a shared machine, or the first
    statements' warm-up, lands on some chunks, not on all), and the overall rate."""
    import django

    django.setup()
    from bench.executor_tasks import noop

    best, started = 0.0, time.perf_counter()
    done = 0
    while done < count:
        chunk = min(ENQUEUE_CHUNK, count - done)
        chunk_started = time.perf_counter()
        for _ in range(chunk):
            noop.enqueue()
        best = max(best, chunk / (time.perf_counter() - chunk_started))
        done += chunk
    print(json.dumps({"enqueue_per_s": best,
                      "overall_per_s": count / (time.perf_counter() - started)}))


class Database:
    """A fresh SQLite file or PostgreSQL database; ``clone()`` copies it for one drain.

    ``metrics``: the metrics database beside it (made with ``with_metrics()``), shared by
    its clones and dropped with the database that made it."""

    def __init__(self, kind: str, tmp: Path, template: Database | None = None) -> None:
        self.kind = kind
        self.tmp = tmp
        self.name = f"bench_executor_{uuid.uuid4().hex[:10]}"
        self.metrics: Database | None = template.metrics if template is not None else None
        self.owns_metrics = False
        if kind == "sqlite":
            self.path = tmp / f"{self.name}.sqlite3"
            self.url = f"sqlite:///{self.path}"
            if template is not None:
                with sqlite3.connect(template.path) as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                shutil.copyfile(template.path, self.path)
        else:
            self.url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{self.name}"
            source = f' TEMPLATE "{template.name}"' if template is not None else ""
            self._admin(f'CREATE DATABASE "{self.name}"{source}')

    def clone(self) -> Database:
        return Database(self.kind, self.tmp, template=self)

    def with_metrics(self) -> Database:
        self.metrics, self.owns_metrics = Database(self.kind, self.tmp), True
        return self

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_URL.replace("postgres://", "postgresql://"),
                             autocommit=True) as conn:
            conn.execute(sql)

    def query(self, sql: str) -> tuple:
        if self.kind == "sqlite":
            with sqlite3.connect(self.path, timeout=30) as conn:
                return conn.execute(sql).fetchone()
        import psycopg

        with psycopg.connect(self.url.replace("postgres://", "postgresql://")) as conn:
            return conn.execute(sql).fetchone()

    def execute(self, sql: str, params: list[Any]) -> None:
        if self.kind == "sqlite":
            with sqlite3.connect(self.path, timeout=30) as conn:
                conn.execute(sql.replace("%s", "?"), params)
            return
        import psycopg

        with psycopg.connect(self.url.replace("postgres://", "postgresql://")) as conn:
            conn.execute(sql, params)

    def drop(self) -> None:
        if self.owns_metrics and self.metrics is not None:
            self.metrics.drop()
        if self.kind == "postgres":
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return float(value.timestamp())


OBSERVERS = ["audit", "events", "metrics"]


def environment(impl: str, db: Database, tmp: Path) -> dict[str, str]:
    """The shipped defaults (whatever this shell sets), but for the databases, the
    backend under test, the log level, and the diagnosis flags."""
    env = {
        "DATABASE_URL": db.url,
        "DJANGO_SETTINGS_MODULE": "bench.executor_settings",
        "BENCH_TASKS_BACKEND": impl,
        "GRACE_LOG_LEVEL": "INFO",
    }
    if db.metrics is not None:
        env["GRACE_METRICS_DATABASE_URL"] = db.metrics.url
    if PERSISTENT:
        env["GRACE_DB_CONN_MAX_AGE"] = "600"
    if not WITH_OBSERVERS:
        env["GRACE_DISABLED_FEATURES"] = ",".join(OBSERVERS)
    if db.kind == "postgres" and REDIS:
        env["REDIS_URL"] = REDIS
    result = project_env(tmp, env)
    for name in ("GRACE_DB_CONN_MAX_AGE", "GRACE_DISABLED_FEATURES", "REDIS_URL"):
        if name not in env and not (name == "REDIS_URL" and db.kind == "postgres"):
            result.pop(name, None)
    return result


def prepare(impl: str, kind: str, count: int, tmp: Path) -> tuple[Database, float]:
    """A migrated database holding ``count`` READY tasks, and the enqueue rate seen."""
    db = Database(kind, tmp).with_metrics()
    env = environment(impl, db, tmp)
    for database in ("default", "metrics"):  # every table: the audit log's, the metrics'
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput",
                        "--database", database],
                       env=env, cwd=ROOT, check=True, capture_output=True)
    out = subprocess.run([sys.executable, __file__, "--enqueue", str(count)], env=env,
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return db, json.loads(out.strip().splitlines()[-1])["enqueue_per_s"]


def drain(impl: str, template: Database, workers: int, count: int, tmp: Path,
          concurrency: int) -> dict[str, Any]:
    """Start ``workers`` worker processes on a copy of ``template``; time the drain."""
    db = template.clone()
    try:
        env = environment(impl, db, tmp)
        manage = [sys.executable, str(ROOT / "manage.py")]
        if impl == "executor":
            command = [*manage, "run_executor", "--interval", "0.1",
                       "--concurrency", str(concurrency)]
        else:
            command = [*manage, "db_worker", "--interval", "0.1", "--no-startup-delay",
                       "--no-reload"]
        table = TABLES[impl]
        # Hold the tasks back until every worker is up: a worker still importing Django
        # would otherwise steal CPU from the drain it is meant to speed up.
        due = db.query(f"SELECT run_after FROM {table} LIMIT 1")[0]  # noqa: S608
        db.execute(f"UPDATE {table} SET run_after = %s", [HOLD])  # noqa: S608
        logs = [tmp / f"{db.name}-{i}.log" for i in range(workers)]
        procs = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=log.open("w"),
                                  stderr=subprocess.STDOUT) for log in logs]
        deadline = time.monotonic() + 300
        try:
            while not all(READY_LINE[impl] in log.read_text() for log in logs):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"{impl} workers did not start")
                time.sleep(0.05)
            db.execute(f"UPDATE {table} SET run_after = %s", [due])  # noqa: S608
            while True:
                done = db.query(f"SELECT COUNT(*) FROM {table} "  # noqa: S608
                                "WHERE status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')")[0]
                if done >= count:
                    finished = time.time()
                    break
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"{impl} {db.kind} x{workers}: {done}/{count} finished")
                time.sleep(0.02)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        first = epoch(db.query(f"SELECT MIN(started_at) FROM {table}")[0])  # noqa: S608
        failed = db.query(f"SELECT COUNT(*) FROM {table} WHERE status <> 'SUCCESSFUL'")[0]  # noqa: S608
        return {
            "drain_per_s": count / (finished - first),
            "failed": failed,
            "locked": sum(log.read_text().count("database is locked") for log in logs),
        }
    finally:
        db.drop()


def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL.replace("postgres://", "postgresql://"),
                             connect_timeout=3):
            return True
    except Exception:
        return False


def redis_reachable(url: str) -> bool:
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
        return True
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per executor run")
    parser.add_argument("--baseline-tasks", type=int, default=2000, help="tasks per db_worker run")
    parser.add_argument("--concurrency", type=int, default=4, help="run_executor --concurrency")
    parser.add_argument("--rounds", type=int, default=2, help="drains per configuration")
    parser.add_argument("--databases", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (skipped when unreachable)")
    parser.add_argument("--observers-off", action="store_true",
                        help="diagnosis: GRACE_DISABLED_FEATURES=audit,events,metrics")
    parser.add_argument("--observers", action="store_true", help=argparse.SUPPRESS)  # the default
    parser.add_argument("--persistent-connections", action="store_true",
                        help="diagnosis: GRACE_DB_CONN_MAX_AGE=600 (db_worker's best case)")
    parser.add_argument("--no-redis", action="store_true",
                        help="PostgreSQL runs with the in-memory channel layer, not Redis")
    parser.add_argument("--enqueue", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global WITH_OBSERVERS, PERSISTENT, REDIS
    WITH_OBSERVERS = not args.observers_off
    PERSISTENT = args.persistent_connections
    if args.enqueue:
        enqueue_main(args.enqueue)
        return
    try:
        import django_tasks_db  # noqa: F401
    except ImportError:
        sys.exit("the baseline is missing: make .venv/.installed-bench")
    kinds = [k for k in args.databases.split(",") if k in ("sqlite", "postgres")]
    if "postgres" in kinds and not postgres_reachable():
        print(f"PostgreSQL at {POSTGRES_URL} is not reachable: skipped")
        kinds.remove("postgres")
    if "postgres" in kinds and not args.no_redis:
        if redis_reachable(REDIS_URL):
            REDIS = REDIS_URL
        else:
            print(f"Redis at {REDIS_URL} is not reachable: PostgreSQL runs without it")
    print(f"observers {'off (diagnosis)' if args.observers_off else 'on (shipped defaults)'}; "
          f"connections {'persistent (diagnosis)' if PERSISTENT else 'default'}; "
          f"PostgreSQL channel layer: {'Redis' if REDIS else 'in-memory'}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    counts = {"db": args.baseline_tasks, "executor": args.tasks}
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    enqueue: dict[tuple[str, str], float] = {}
    with TemporaryDirectory(prefix="bench-executor-") as tmp_dir:
        tmp = Path(tmp_dir)
        for kind in kinds:
            templates = {}
            for impl in ("db", "executor"):
                templates[impl], enqueue[(impl, kind)] = prepare(impl, kind, counts[impl], tmp)
                print(f"{impl:9} {kind:8} enqueue {enqueue[(impl, kind)]:7.0f} tasks/s", flush=True)
            # Rounds interleave the configurations, so a busy moment on the machine does not
            # land on one of them only; the best round of each is kept.
            for round_ in range(args.rounds):
                if round_:  # enqueue again, alternating, on fresh databases: the best is kept
                    for impl in ("db", "executor"):
                        fresh, rate = prepare(impl, kind, counts[impl], tmp)
                        fresh.drop()
                        print(f"{impl:9} {kind:8} enqueue {rate:7.0f} tasks/s (round "
                              f"{round_ + 1})", flush=True)
                        enqueue[(impl, kind)] = max(enqueue[(impl, kind)], rate)
                for workers in (1, 2):
                    for impl in ("db", "executor"):
                        result = drain(impl, templates[impl], workers, counts[impl], tmp,
                                       args.concurrency)
                        print(f"{impl:9} {kind:8} workers={workers} round {round_ + 1}: drain "
                              f"{result['drain_per_s']:7.0f} tasks/s  failed={result['failed']}"
                              f"  'database is locked' lines={result['locked']}", flush=True)
                        key = (impl, kind, workers)
                        if key not in best or result["drain_per_s"] > best[key]["drain_per_s"]:
                            best[key] = result
            for template in templates.values():
                template.drop()
    print(f"\nbest of {args.rounds} rounds; executor --concurrency {args.concurrency}; "
          "ratios against db_worker in the same run:")
    summary: dict[str, Any] = {
        "observers": WITH_OBSERVERS, "persistent_connections": PERSISTENT,
        "tasks": args.tasks, "baseline_tasks": args.baseline_tasks, "rounds": args.rounds,
        "concurrency": args.concurrency, "load": round(os.getloadavg()[0], 2),
    }
    for kind in kinds:
        figures: dict[str, Any] = {"redis": bool(REDIS) if kind == "postgres" else False}
        for workers in (1, 2):
            ours, base = best[("executor", kind, workers)], best[("db", kind, workers)]
            ratio = ours["drain_per_s"] / base["drain_per_s"]
            figures[f"drain_x{workers}"] = round(ratio, 2)
            figures[f"executor_x{workers}_per_s"] = round(ours["drain_per_s"])
            figures[f"db_worker_x{workers}_per_s"] = round(base["drain_per_s"])
            print(f"  {kind:8} {workers} worker(s): executor {ours['drain_per_s']:6.0f}/s, "
                  f"db_worker {base['drain_per_s']:5.0f}/s: x{ratio:.1f}")
        ratio = enqueue[("executor", kind)] / enqueue[("db", kind)]
        figures.update(enqueue=round(ratio, 2),
                       executor_enqueue_per_s=round(enqueue[("executor", kind)]),
                       db_enqueue_per_s=round(enqueue[("db", kind)]))
        print(f"  {kind:8} enqueue: executor {enqueue[('executor', kind)]:.0f}/s, db "
              f"{enqueue[('db', kind)]:.0f}/s: x{ratio:.2f}")
        for impl in ("executor", "db"):
            one, two = best[(impl, kind, 1)], best[(impl, kind, 2)]
            scale = two["drain_per_s"] / one["drain_per_s"]
            figures["two_over_one" if impl == "executor" else "db_two_over_one"] = round(scale, 2)
            print(f"  {kind:8} {impl:9} 2 workers / 1 worker: x{scale:.2f}")
        summary[kind] = figures
    print("SUMMARY " + json.dumps(summary, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
