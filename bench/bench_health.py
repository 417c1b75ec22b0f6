"""Cost of the project's middleware on the request path.

Serves the app twice in the same run, each a real daphne process on fresh SQLite files:
``full`` (the project's settings: request IDs, JSON errors, access log, Django's
security/session/CSRF/auth middleware) and ``bare`` (the same app with MIDDLEWARE = []).
Each is loaded with 32 connections on ``/api/health`` (each database checked) and on
``/api/ping`` (a trivial view: the request path alone). Rounds alternate full and bare to
even out drift; prints req/s, p50, p99 and full/bare ratios (goal: >= 0.9).

    .venv/bin/python bench/bench_health.py [--seconds 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadResult, load  # noqa: E402
from tests.servers import GraceServer  # noqa: E402

CONFIGS = {"full": "bench.settings_full", "bare": "bench.settings_bare"}
PATHS = ["/api/health", "/api/ping"]


def measure(url: str, path: str, name: str, seconds: float, connections: int) -> LoadResult:
    async def request(client, n):
        return await client.get(path)

    return load(name, request, base_url=url, connections=connections, seconds=seconds, warmup=1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    results: dict[tuple[str, str], list[LoadResult]] = {}
    with tempfile.TemporaryDirectory(prefix="grace-bench-") as tmp:
        servers = {}
        for config, module in CONFIGS.items():
            directory = Path(tmp) / config
            directory.mkdir()
            env = {"DJANGO_SETTINGS_MODULE": module, "PYTHONPATH": str(ROOT)}
            servers[config] = GraceServer(directory, env).__enter__()
        try:
            for round_no in range(args.rounds):
                order = list(CONFIGS) if round_no % 2 == 0 else list(reversed(CONFIGS))
                for path in PATHS:
                    for config in order:
                        result = measure(
                            servers[config].url,
                            path,
                            f"{config} {path}",
                            args.seconds,
                            args.connections,
                        )
                        print(f"round {round_no + 1}  {result.line()}", flush=True)
                        results.setdefault((config, path), []).append(result)
        finally:
            for server in servers.values():
                server.__exit__(None, None, None)

    print()
    print(f"{args.connections} connections, {args.rounds} rounds of {args.seconds:g} s each")
    for path in PATHS:
        rows = {}
        for config in CONFIGS:
            runs = results[(config, path)]
            rows[config] = (
                statistics.median(r.rps for r in runs),
                statistics.median(r.p50 for r in runs),
                statistics.median(r.p99 for r in runs),
                sum(r.errors for r in runs),
            )
            rps, p50, p99, errors = rows[config]
            print(
                f"{config:<5} {path:<12} {rps:8.1f} req/s  p50 {p50:6.1f} ms  "
                f"p99 {p99:6.1f} ms  errors {errors}"
            )
        ratio = rows["full"][0] / rows["bare"][0] if rows["bare"][0] else 0.0
        verdict = "ok" if ratio >= 0.9 else "BELOW GOAL"
        print(f"ratio full/bare {path:<12} {ratio:.3f}  (goal >= 0.9: {verdict})")


if __name__ == "__main__":
    main()
