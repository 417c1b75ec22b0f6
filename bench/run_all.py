"""``make bench``: every benchmark, on the embedded defaults and on PostgreSQL + Redis, and
a one-screen summary of their ratios.

Runs the benchmark scripts themselves (profile_exchange, profile_task, bench_chat,
bench_executor, bench_health, bench_ws, bench_ops, bench_llm, bench_security,
bench_answers), each in its own process, twice:

- ``sqlite``: as they are (fresh SQLite files, the in-memory channel layer);
- ``postgres``: the same scripts, with every server they start (tests.servers.GraceServer)
  on a fresh pair of PostgreSQL databases (main and metrics) and the Redis channel layer.
  The profiles, bench_chat (Grace beside its anchor) and bench_executor (beside
  django-tasks-db's worker) are told the engine instead and make their own databases.

Then the executor alone on PostgreSQL with 4 ``run_executor`` processes (bench_executor's
own ``prepare``/``drain``; goal: at least 3,000 no-op tasks/s). Each script's output is
shown as it runs; the summary repeats the lines that carry a ratio or a goal.

    .venv/bin/python bench/run_all.py [--quick] [--only health,chat,...] [--engines sqlite,postgres]

``--quick`` shortens every script (fewer and shorter rounds) for a smoke run. PostgreSQL
and Redis come from GRACE_TEST_POSTGRES_URL / GRACE_TEST_REDIS_URL (the test defaults);
the postgres pass is skipped, with a note, when either is unreachable.
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POSTGRES_URL = os.environ.get("GRACE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GRACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# name: (script, full arguments, --quick arguments, summary line patterns). A pattern
# "*" keeps every line of the script's output after its first blank line (a table).
BENCHES: dict[str, tuple[str, list[str], list[str], list[str]]] = {
    "profile": ("profile_exchange.py", [], ["--exchanges", "60"], ["*"]),
    "task-profile": ("profile_task.py", [], ["--tasks", "500"], ["*"]),
    "chat": ("bench_chat.py", [], ["--rounds", "1", "--seconds", "4"],
             [r"chat/anchor:", r"ERROR lines"]),
    "executor": ("bench_executor.py", [], ["--rounds", "1"],
                 [r"worker\(s\): executor", r" enqueue: executor", r"2 workers / 1 worker"]),
    "health": ("bench_health.py", [], ["--rounds", "1", "--seconds", "2"], [r"^ratio "]),
    "ws": ("bench_ws.py", [], ["--seconds", "4", "--warmup", "1"],
           [r"^websocket / ", r"^p50 websocket"]),
    "ops": ("bench_ops.py", [], ["--rounds", "1", "--seconds", "4"], [r"^on/off:"]),
    "llm": ("bench_llm.py", [], ["--requests", "6"], [r"^first token:", r"^tokens/s:"]),
    "security": ("bench_security.py", ["--quiet"], ["--quiet", "--rounds", "1"],
                 [r"^detection:", r"^false positives:", r"adversarial long inputs:"]),
    "answers": ("bench_answers.py", [], ["--limit", "20"],
                [r"^fallback: \d", r"^local: \d", r"^openai: \d", r"^local model speed"]),
}
# Scripts that choose their engine themselves (fresh databases of their own, anchors on
# the same engine): the option that names it. The others run under _postgres_child.
ENGINE_OPTION = {"profile": "--engines", "task-profile": "--databases", "chat": "--engines",
                 "executor": "--databases"}


# --- child mode: run one script with its servers on PostgreSQL + Redis -----------------


def _postgres_child(script: str, args: list[str]) -> None:
    """Run ``script`` with tests.servers.project_env giving each server folder its own
    PostgreSQL databases (unless the caller names a DATABASE_URL) and REDIS_URL."""
    import runpy

    import psycopg

    import tests.servers as servers

    original = servers.project_env
    made: dict[str, tuple[str, str]] = {}
    admin = POSTGRES_URL.replace("postgres://", "postgresql://", 1)

    def drop_all() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            for pair in made.values():
                for url in pair:
                    name = url.rsplit("/", 1)[1]
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    atexit.register(drop_all)

    def project_env(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = original(tmp, extra)
        env["REDIS_URL"] = REDIS_URL
        if extra and "DATABASE_URL" in extra:
            return env
        key = str(Path(tmp).resolve())
        if key not in made:
            stem = f"bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(admin, autocommit=True) as conn:
                for suffix in ("db", "metrics"):
                    conn.execute(f'CREATE DATABASE "{stem}_{suffix}"')
            base = POSTGRES_URL.rsplit("/", 1)[0]
            made[key] = (f"{base}/{stem}_db", f"{base}/{stem}_metrics")
        env["DATABASE_URL"], env["GRACE_METRICS_DATABASE_URL"] = made[key]
        return env

    servers.project_env = project_env  # GraceServer and the scripts' imports see this one
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


# --- the run ---------------------------------------------------------------------------


def services_problem() -> str | None:
    try:
        import psycopg
        import redis

        with psycopg.connect(POSTGRES_URL.replace("postgres://", "postgresql://", 1),
                             connect_timeout=3):
            pass
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - reported, the pass is skipped
        return f"{type(exc).__name__}: {exc}"
    return None


def run_script(name: str, engine: str, quick: bool) -> tuple[int, str]:
    script, full, short, _ = BENCHES[name]
    path = str(ROOT / "bench" / script)
    args = list(short if quick else full)
    if name in ENGINE_OPTION:
        args += [ENGINE_OPTION[name], engine]
    if engine == "postgres" and name not in ENGINE_OPTION:
        command = [sys.executable, "-c",
                   "import sys; from bench.run_all import _postgres_child; "
                   "_postgres_child(sys.argv[1], sys.argv[2:])", path, *args]
    else:
        command = [sys.executable, path, *args]
    print(f"\n=== {name} on {engine}: {' '.join([script, *args])}", flush=True)
    lines: list[str] = []
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip("\n"))
    return proc.wait(), "\n".join(lines)


def executor_four_workers(quick: bool) -> list[str]:
    """No-op tasks drained by 4 workers on PostgreSQL (bench_executor's prepare/drain)."""
    from bench import bench_executor

    tasks = 4000 if quick else 10_000
    out = []
    with TemporaryDirectory(prefix="bench-executor-4-") as tmp_dir:
        tmp = Path(tmp_dir)
        template, enqueue = bench_executor.prepare("executor", "postgres", tasks, tmp)
        try:
            for concurrency in (2, 4):
                best = 0.0
                for _ in range(1 if quick else 2):
                    result = bench_executor.drain("executor", template, 4, tasks, tmp,
                                                  concurrency)
                    best = max(best, result["drain_per_s"])
                    print(f"executor postgres workers=4 concurrency={concurrency}: "
                          f"{result['drain_per_s']:.0f} tasks/s failed={result['failed']}",
                          flush=True)
                verdict = "ok" if best >= 3000 else "BELOW GOAL"
                out.append(f"executor postgres 4 workers x {concurrency} children, {tasks} "
                           f"no-op tasks: {best:.0f} tasks/s (goal >= 3000: {verdict}); "
                           f"enqueue {enqueue:.0f}/s")
        finally:
            template.drop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rounds: a smoke run")
    parser.add_argument("--only", default=",".join(BENCHES),
                        help=f"comma-separated, of: {', '.join(BENCHES)}")
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--no-four-workers", action="store_true",
                        help="skip the executor on PostgreSQL with 4 workers")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n in BENCHES]
    engines = [e for e in args.engines.split(",") if e in ("sqlite", "postgres")]
    problem = services_problem() if "postgres" in engines or not args.no_four_workers else None
    notes: list[str] = []
    if problem:
        notes.append(f"PostgreSQL/Redis unreachable ({problem}): postgres pass skipped")
        engines = [e for e in engines if e != "postgres"]
    started = time.monotonic()
    summary: list[tuple[str, str, list[str]]] = []
    for engine in engines:
        for name in names:
            code, output = run_script(name, engine, args.quick)
            patterns = BENCHES[name][3]
            if patterns == ["*"]:
                table = output.split("\n\n", 1)[-1].splitlines()
                picked = [line for line in table if line and not line.startswith("SUMMARY")]
            else:
                picked = [line.strip() for line in output.splitlines()
                          if any(re.search(p, line) for p in patterns)]
            if code != 0:
                picked.append(f"FAILED (exit {code}): {output.strip().splitlines()[-1:]}")
            summary.append((name, engine, picked))
    if not args.no_four_workers and not problem:
        print("\n=== executor on postgres with 4 workers", flush=True)
        summary.append(("executor x4", "postgres", executor_four_workers(args.quick)))
    info = machine()
    print(f"\n{'=' * 78}\nSummary ({info}; {time.monotonic() - started:.0f} s)")
    for name, engine, lines in summary:
        print(f"\n{name} [{engine}]")
        for line in lines or ["(no ratio line found: see the output above)"]:
            print(f"  {line}")
    for note in notes:
        print(f"\nnote: {note}")


def machine() -> str:
    load = os.getloadavg()
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
            f"load average {load[0]:.1f}, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
