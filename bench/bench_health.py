"""Cost of the project's middleware on the request path.

Serves the app twice in the same run, each a real daphne process on fresh SQLite files:
``full`` (the project's settings: request IDs, JSON errors, access log, metrics, Django's
security/session/CSRF/auth middleware), ``full-noaccess`` (the same with
GRACE_ACCESS_LOG=false) and ``bare`` (the same app with MIDDLEWARE = []).
Each is loaded with 32 connections on ``/api/health`` (each database checked) and on
``/api/ping`` (a trivial view: the request path alone). Rounds alternate full and bare to
even out drift; prints req/s, p50, p99, the server's CPU time per request (read from
/proc, so other load on the machine hardly moves it) and two full/bare ratios: req/s,
and capacity (bare CPU per request / full CPU per request). Goal: >= 0.9.

    .venv/bin/python bench/bench_health.py [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadResult, load  # noqa: E402
from tests.servers import GraceServer  # noqa: E402

# name: (settings module, extra environment)
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "full": ("bench.settings_full", {}),
    "full-noaccess": ("bench.settings_full", {"GRACE_ACCESS_LOG": "false"}),
    "bare": ("bench.settings_bare", {}),
}
PATHS = ["/api/health", "/api/ping"]


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(
    server: GraceServer, path: str, name: str, seconds: float, connections: int
) -> tuple[LoadResult, float]:
    """Load ``path``; return the result and the server's CPU ms per request."""

    async def request(client, n):
        return await client.get(path)

    assert server.proc is not None
    load(name, request, base_url=server.url, connections=connections, seconds=1, warmup=0)
    before = cpu_seconds(server.proc.pid)
    result = load(
        name, request, base_url=server.url, connections=connections, seconds=seconds, warmup=0
    )
    cpu_ms = (cpu_seconds(server.proc.pid) - before) * 1000 / max(1, result.requests)
    return result, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    results: dict[tuple[str, str], list[tuple[LoadResult, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="grace-bench-") as tmp:
        servers = {}
        for config, (module, extra) in CONFIGS.items():
            directory = Path(tmp) / config
            directory.mkdir()
            env = {"DJANGO_SETTINGS_MODULE": module, "PYTHONPATH": str(ROOT), **extra}
            servers[config] = GraceServer(directory, env).__enter__()
        try:
            for round_no in range(args.rounds):
                order = list(CONFIGS) if round_no % 2 == 0 else list(reversed(CONFIGS))
                for path in PATHS:
                    for config in order:
                        result, cpu_ms = measure(
                            servers[config],
                            path,
                            f"{config} {path}",
                            args.seconds,
                            args.connections,
                        )
                        print(
                            f"round {round_no + 1}  {result.line()}  server CPU "
                            f"{cpu_ms:.2f} ms/request",
                            flush=True,
                        )
                        results.setdefault((config, path), []).append((result, cpu_ms))
        finally:
            for server in servers.values():
                server.__exit__(None, None, None)

    print()
    print(f"{args.connections} connections, {args.rounds} rounds of {args.seconds:g} s (medians)")
    for path in PATHS:
        rows = {}
        for config in CONFIGS:
            runs = results[(config, path)]
            rows[config] = (
                statistics.median(r.rps for r, _ in runs),
                statistics.median(r.p50 for r, _ in runs),
                statistics.median(r.p99 for r, _ in runs),
                statistics.median(cpu for _, cpu in runs),
                sum(r.errors for r, _ in runs),
            )
            rps, p50, p99, cpu, errors = rows[config]
            print(
                f"{config:<13} {path:<12} {rps:8.1f} req/s  p50 {p50:6.1f} ms  "
                f"p99 {p99:6.1f} ms  server CPU {cpu:5.2f} ms/request  errors {errors}"
            )
        for config in ("full", "full-noaccess"):
            ratio = rows[config][0] / rows["bare"][0] if rows["bare"][0] else 0.0
            capacity = rows["bare"][3] / rows[config][3] if rows[config][3] else 0.0
            for label, value in (("req/s", ratio), ("capacity", capacity)):
                verdict = "ok" if value >= 0.9 else "BELOW GOAL"
                print(
                    f"ratio {config}/bare {path:<12} {label:<9} {value:.3f}  "
                    f"(goal >= 0.9: {verdict})"
                )


if __name__ == "__main__":
    main()
