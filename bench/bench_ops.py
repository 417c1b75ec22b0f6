"""What the operations parts cost a chat reply: the audit log, the event bus and metrics
on (the default) against the same server build with them switched off
(``GRACE_DISABLED_FEATURES=audit,events,metrics``), measured in the same run.

Two real daphne processes on fresh SQLite files, loaded one at a time and alternately
(``POST /api/chat/`` with an API token, throttles off, the executor as the task backend:
each reply also audits two enqueued tasks). Prints req/s, p50, p99 and the server's CPU
time per request, then the on/off ratios, how many audit entries and metric totals the
"on" server wrote, and whether its audit chain verifies.

    .venv/bin/python bench/bench_ops.py [--seconds 8] [--rounds 2] [--connections 16]
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
from tests.servers import GraceServer, manage  # noqa: E402

MESSAGES = ["Hello!", "How do I run the executor worker?", "What is Grace?", "Thanks!"]
TICKS = os.sysconf("SC_CLK_TCK")
SERVERS = {
    "ops on": {},
    "ops off": {"GRACE_DISABLED_FEATURES": "audit,events,metrics"},
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def api_token(server: GraceServer) -> str:
    manage(server.env, "shell", "-c",
           "from django.contrib.auth.models import User; User.objects.create_user('bench')")
    return manage(server.env, "create_api_token", "bench").stdout.strip()


def measure(name: str, url: str, token: str, seconds: float, connections: int) -> LoadResult:
    headers = {"Authorization": f"Bearer {token}"}

    async def request(client, n):
        return await client.post(
            "/api/chat/", json={"message": MESSAGES[n % len(MESSAGES)]}, headers=headers
        )

    return load(name, request, base_url=url, connections=connections, seconds=seconds,
                warmup=1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--off", default="audit,events,metrics",
                        help="GRACE_DISABLED_FEATURES of the baseline server")
    args = parser.parse_args()
    SERVERS["ops off"] = {"GRACE_DISABLED_FEATURES": args.off}
    base = {"GRACE_THROTTLE_USER": "off", "GRACE_ACCESS_LOG": "false"}
    results: dict[str, list[LoadResult]] = {name: [] for name in SERVERS}
    cpu: dict[str, list[float]] = {name: [] for name in SERVERS}
    with tempfile.TemporaryDirectory(prefix="grace-bench-ops-") as tmp:
        servers = {}
        for name, extra in SERVERS.items():
            folder = Path(tmp) / name.replace(" ", "-")
            folder.mkdir()
            servers[name] = GraceServer(folder, {**base, **extra})
        for server in servers.values():
            server.__enter__()
        try:
            tokens = {name: api_token(server) for name, server in servers.items()}
            for round_no in range(args.rounds):
                order = list(SERVERS) if round_no % 2 == 0 else list(reversed(SERVERS))
                for name in order:
                    server = servers[name]
                    assert server.proc is not None
                    before = cpu_seconds(server.proc.pid)
                    result = measure(name, server.url, tokens[name], args.seconds,
                                     args.connections)
                    total = result.requests * (1 + 1.5 / args.seconds)
                    cpu[name].append((cpu_seconds(server.proc.pid) - before) * 1000 / total)
                    results[name].append(result)
                    print(f"round {round_no + 1}: {result.line()}  statuses {result.statuses}"
                          f"  server CPU {cpu[name][-1]:.2f} ms/request")
        finally:
            for server in servers.values():
                server.__exit__(None, None, None)
        on = servers["ops on"]
        verify = manage(on.env, "verify_audit_log").stdout.strip()
        totals = manage(on.env, "shell", "-v", "0", "-c", (
            "from grace.metrics.models import MetricTotal, MetricRollup, MetricEvent; "
            "print(MetricTotal.objects.using('metrics').count(), "
            "MetricRollup.objects.using('metrics').count(), "
            "MetricEvent.objects.using('metrics').count())"
        )).stdout.strip().splitlines()[-1].split()
    print()
    summary = {}
    for name, runs in results.items():
        summary[name] = (
            statistics.mean(r.rps for r in runs), statistics.mean(r.p50 for r in runs),
            statistics.mean(r.p99 for r in runs), statistics.mean(cpu[name]),
        )
        rps, p50, p99, ms = summary[name]
        print(f"{name:<8} {rps:8.1f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   "
              f"server CPU {ms:5.2f} ms/request")
    (on_rps, on_p50, on_p99, on_cpu), (off_rps, off_p50, off_p99, off_cpu) = (
        summary["ops on"], summary["ops off"]
    )
    print(f"\non/off: throughput {on_rps / off_rps:.2f}x, p50 {on_p50 / off_p50:.2f}x, "
          f"p99 {on_p99 / off_p99:.2f}x, CPU per request {on_cpu / off_cpu:.2f}x")
    print(f"'ops on' server: {verify}")
    print(f"metrics database: {totals[0]} totals, {totals[1]} rollups, {totals[2]} raw events")


if __name__ == "__main__":
    main()
