"""Where one task and one enqueue spend their cost, on the shipped defaults.

For each database (SQLite; PostgreSQL when reachable), on a fresh migrated database with
the project's default settings (operations observers on, default connection settings,
the metrics database beside the main one):

- **enqueue**: one process enqueues N no-op tasks through the Tasks API
  (``noop.enqueue()``, executor/backend.py with its bounded-queue check);
- **task**: one worker (``executor.worker.Worker``, the code ``manage.py run_executor``
  runs, default concurrency and batch, ``burst``) drains them.

Per enqueue and per task it prints: CPU time (the process's threads, the worker's child
processes apart), database round trips (statements sent, by database), write transactions
(commits that wrote, and writes outside a transaction), thread hops (audit entries handed
to the audit writer thread, events handed to the event loop thread) and process hops (jobs
sent to a worker's children), plus the audit entries, events and metrics recorded. The
audit writer and the metrics flusher are flushed before the clock stops, so their cost is
counted. A last line ``SUMMARY {json}`` carries the same figures for bench/run_all.py.

    .venv/bin/python bench/profile_task.py [--tasks 1000] [--databases sqlite,postgres]
        [--observers-off] [--cprofile 25]

``--cprofile N`` prints the N costliest functions (own time; ``BENCH_PROFILE_SORT=cumulative``
for the time under each) of the main thread of the enqueuing process and of the worker; the
profiler inflates the CPU figures of that run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_executor import (  # noqa: E402
    OBSERVERS,
    Database,
    postgres_reachable,
)
from bench.instrument import SqlCounts  # noqa: E402
from tests.servers import project_env  # noqa: E402


class Counters:
    """Statements and write transactions (bench.instrument); thread and process hops."""

    def __init__(self) -> None:
        self.sql = SqlCounts()
        self.lock = threading.Lock()
        self.hops: Counter[str] = Counter()

    def reset(self) -> None:
        self.sql.reset()
        with self.lock:
            self.hops.clear()

    def snapshot(self) -> dict[str, Any]:
        sql = self.sql.snapshot()
        statements = Counter(sql["reads"]) + Counter(sql["writes"])
        with self.lock:
            return {"statements": dict(statements),
                    "write_transactions": sql["write_transactions"],
                    "hops": dict(self.hops)}


COUNTERS = Counters()


def counters_install() -> None:
    """Count every statement on every connection (every thread's), every commit that
    wrote, and the hand-overs to the audit writer, the event loop and the children."""
    COUNTERS.sql.install()
    import asyncio

    from grace import audit_writer, events
    from grace.metrics import buffer

    def hop(name: str, fn: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with COUNTERS.lock:
                COUNTERS.hops[name] += 1
            return fn(*args, **kwargs)

        return counted

    submit = audit_writer._Writer.submit
    audit_writer._Writer.submit = hop("audit entries to the writer thread", submit)  # type: ignore[method-assign]
    events.asyncio = _Proxy(asyncio, run_coroutine_threadsafe=hop(
        "events to the event loop thread", asyncio.run_coroutine_threadsafe))
    add = buffer._Flusher.add
    buffer._Flusher.add = hop("metrics buffered (no hop)", add)  # type: ignore[method-assign]
    from executor import pool

    send = pool.Child.send
    pool.Child.send = hop("jobs to a child process", send)  # type: ignore[method-assign]


class _Proxy:
    """A module with some attributes replaced."""

    def __init__(self, module: Any, **replaced: Any) -> None:
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def flush_everything() -> None:
    from grace.audit_writer import audit_flush
    from grace.metrics.buffer import metrics_flush

    audit_flush(30.0)
    metrics_flush(30.0)


def child_main(mode: str, count: int, cprofile: int) -> None:
    """In a process of its own: enqueue ``count`` tasks, or drain them; print JSON."""
    import django

    django.setup()
    counters_install()
    from bench.executor_tasks import noop

    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, main0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    profiler = None
    if cprofile:
        import cProfile

        profiler = cProfile.Profile()
    if mode == "enqueue":
        if profiler is not None:
            profiler.enable()
        for _ in range(count):
            noop.enqueue()
        if profiler is not None:
            profiler.disable()
    else:
        from executor.conf import executor_settings
        from executor.worker import Worker

        worker = Worker(concurrency=executor_settings.CONCURRENCY, batch=executor_settings.BATCH,
                        interval=0.1, burst=True)
        if profiler is not None:
            profiler.enable()
        worker.run()
        if profiler is not None:
            profiler.disable()
    wall = time.perf_counter() - wall0
    flush_everything()
    cpu, main = time.process_time() - cpu0, time.thread_time() - main0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (children.ru_utime + children.ru_stime) - (children0.ru_utime + children0.ru_stime)
    from django.db import connection

    done = None
    if mode == "drain":
        from executor.models import TaskRecord

        done = TaskRecord.objects.filter(status="SUCCESSFUL").count()
    from grace.models import AuditEntry

    audited = AuditEntry.objects.count()
    figures = {"mode": mode, "count": count, "done": done, "audit_entries_total": audited,
               "wall_s": wall, "cpu_s": cpu, "cpu_main_s": main, "cpu_children_s": child_cpu,
               **COUNTERS.snapshot(), "vendor": connection.vendor}
    if profiler is not None:
        import io
        import pstats

        out = io.StringIO()
        order = os.environ.get("BENCH_PROFILE_SORT", "tottime")
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(cprofile)
        print(f"PROFILE {json.dumps(out.getvalue())}")
    print("RESULT " + json.dumps(figures))


def environment(db: Database, metrics: Database, tmp: Path, observers: bool) -> dict[str, str]:
    extra = {
        "DATABASE_URL": db.url,
        "GRACE_METRICS_DATABASE_URL": metrics.url,
        "DJANGO_SETTINGS_MODULE": "bench.executor_settings",
        "BENCH_TASKS_BACKEND": "executor",
    }
    if not observers:
        extra["GRACE_DISABLED_FEATURES"] = ",".join(OBSERVERS)
    extra["BENCH_TMP"] = str(tmp)
    env = project_env(tmp, extra)
    for name in ("GRACE_DB_CONN_MAX_AGE", "GRACE_DISABLED_FEATURES", "REDIS_URL",
                 "GRACE_LOG_LEVEL"):
        if name not in extra:
            env.pop(name, None)  # the shipped defaults, whatever this shell has
    if db.kind == "postgres" and os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    return env


def run_child(env: dict[str, str], mode: str, count: int, cprofile: int) -> dict[str, Any]:
    # stderr: the log lines of the defaults (INFO, one per task state change), kept apart
    log = Path(env["BENCH_TMP"]) / f"{mode}.log"
    with log.open("w") as stderr:
        command = [sys.executable, __file__, "--child", mode, "--tasks", str(count),
                   "--cprofile", str(cprofile)]
        proc = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=stderr, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"{mode} failed:\n{log.read_text()[-4000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("PROFILE "):
            print(f"--- {mode}: the costliest functions of the main thread (cProfile)")
            print(json.loads(line[len("PROFILE "):]))
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def per_item(figures: dict[str, Any]) -> dict[str, Any]:
    n = figures["count"]
    out: dict[str, Any] = {
        "cpu_ms": 1000 * figures["cpu_s"] / n,
        "cpu_main_thread_ms": 1000 * figures["cpu_main_s"] / n,
        "cpu_other_threads_ms": 1000 * (figures["cpu_s"] - figures["cpu_main_s"]) / n,
        "cpu_children_ms": 1000 * figures["cpu_children_s"] / n,
        "wall_ms": 1000 * figures["wall_s"] / n,
    }
    for alias, value in sorted(figures["statements"].items()):
        out[f"round_trips[{alias}]"] = value / n
    for alias, value in sorted(figures["write_transactions"].items()):
        out[f"write_transactions[{alias}]"] = value / n
    for name, value in sorted(figures["hops"].items()):
        out[name] = value / n
    return out


def table(rows: dict[str, dict[str, Any]]) -> None:
    names: list[str] = []
    for figures in rows.values():
        names += [k for k in figures if k not in names]
    columns = list(rows)
    width = max(len(n) for n in names) + 2
    print(" " * width + "".join(f"{c:>18}" for c in columns))
    for name in names:
        cells = "".join(f"{rows[c].get(name, 0):>18.3f}" for c in columns)
        print(f"{name:<{width}}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks enqueued, then drained")
    parser.add_argument("--databases", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (skipped when unreachable)")
    parser.add_argument("--observers-off", action="store_true",
                        help="GRACE_DISABLED_FEATURES=audit,events,metrics (a diagnosis)")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="print the N costliest functions of the worker's main thread")
    parser.add_argument("--child", choices=("enqueue", "drain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.tasks, args.cprofile)
        return
    kinds = [k for k in args.databases.split(",") if k in ("sqlite", "postgres")]
    if "postgres" in kinds and not postgres_reachable():
        print("PostgreSQL is not reachable: skipped")
        kinds.remove("postgres")
    summary: dict[str, Any] = {"tasks": args.tasks, "observers": not args.observers_off}
    with TemporaryDirectory(prefix="profile-task-") as tmp_dir:
        tmp = Path(tmp_dir)
        for kind in kinds:
            db, metrics = Database(kind, tmp), Database(kind, tmp)
            try:
                env = environment(db, metrics, tmp, not args.observers_off)
                manage = [sys.executable, str(ROOT / "manage.py")]
                for database in ("default", "metrics"):
                    subprocess.run([*manage, "migrate", "--noinput", "--database", database],
                                   env=env, cwd=ROOT, check=True, capture_output=True)
                enqueue = run_child(env, "enqueue", args.tasks, args.cprofile)
                drain = run_child(env, "drain", args.tasks, args.cprofile)
            finally:
                db.drop()
                metrics.drop()
            print(f"audit entries in the log after the drain: {drain['audit_entries_total']}")
            if drain["done"] != args.tasks:
                print(f"warning: {drain['done']} of {args.tasks} tasks finished")
            rows = {"one enqueue": per_item(enqueue), "one task": per_item(drain)}
            redis = " + Redis" if kind == "postgres" and env.get("REDIS_URL") else ""
            print(f"\n{kind}{redis}: {args.tasks} no-op tasks, observers "
                  f"{'off' if args.observers_off else 'on (defaults)'}; per item:")
            table(rows)
            summary[kind] = {"redis": bool(redis), **rows}
    print("SUMMARY " + json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
