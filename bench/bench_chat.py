"""Chat against its anchor: Grace's ``POST /api/chat/`` and ``/ws/chat/`` beside a minimal
Django + ninja project doing one insert per request (bench/anchor/), same server, same run.

For each engine (SQLite files; PostgreSQL + Redis when reachable), two daphne processes on
fresh databases: the anchor (``POST /api/insert``, ``/ws/insert/``) and Grace on its
shipped defaults except that throttles are off (32 connections of one account would
exceed them) and the reply backend is the deterministic fallback; no worker runs (the
follow-up tasks queued are removed between loads). Chat is authenticated
with an API token; each connection continues its own conversation with a mix of messages
(a greeting, questions the knowledge base answers and cannot, "what did I say?"), a new
one every 20 turns. Rounds alternate the order of the loads. Prints req/s, p50, p99,
errors (socket errors and 5xx), the server's CPU time per request, the ratios against
the anchor, and one ``SUMMARY {json}`` line for bench/run_all.py.

Goals (issue 16): chat >= 0.8x the one-insert endpoint's requests/s, p99 <= 2x its p99, no
errors, for REST and for websocket chat (exchanges/s against the same endpoint), on both
engines. The websocket chat is also compared with the anchor's websocket insert, as a
diagnosis.

    .venv/bin/python bench/bench_chat.py [--seconds 8] [--rounds 2] [--connections 32]
                                         [--engines sqlite,postgres] [--no-ws]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadResult, load, ws_load  # noqa: E402
from bench.services import (  # noqa: E402
    AnchorServer,
    api_token,
    cpu_seconds,
    fresh_databases,
    postgres_and_redis_reachable,
)
from tests.servers import GraceServer, manage  # noqa: E402

MESSAGES = [
    "Hello!",
    "How do I run the executor worker?",
    "What is the capital of Mongolia?",
    "What did I say?",
    "How do I create an API token?",
    "Thanks!",
]
GRACE_ENV = {
    "GRACE_REPLY_BACKEND": "fallback",
    "GRACE_THROTTLE_USER": "off",
    "GRACE_THROTTLE_ANON": "off",
}
WARMUP = 1.5
FLAGS: dict[str, int] = {}


def anchor_rest(url: str, args: argparse.Namespace) -> LoadResult:
    async def request(client, n):
        return await client.post("/api/insert", json={"message": MESSAGES[n % len(MESSAGES)]})

    return load("anchor POST /api/insert", request, base_url=url,
                connections=args.connections, seconds=args.seconds, warmup=WARMUP)


def grace_rest(url: str, args: argparse.Namespace, token: str) -> LoadResult:
    conversations: dict[int, str] = {}
    headers = {"Authorization": f"Bearer {token}"}

    async def request(client, n):
        worker, counter = divmod(n, 1_000_000)
        body = {"message": MESSAGES[counter % len(MESSAGES)]}
        if worker in conversations and counter % 20:  # a new conversation every 20 turns
            body["conversation_id"] = conversations[worker]
        response = await client.post("/api/chat/", json=body, headers=headers)
        if response.status_code == 200:
            data = response.json()
            conversations[worker] = data["conversation_id"]
            for flag in data["metadata"]["flags"]:
                FLAGS[flag] = FLAGS.get(flag, 0) + 1
        return response

    return load("grace POST /api/chat/", request, base_url=url,
                connections=args.connections, seconds=args.seconds, warmup=WARMUP)


def anchor_ws(url: str, args: argparse.Namespace) -> LoadResult:
    return ws_load("anchor /ws/insert/", url.replace("http://", "ws://") + "/ws/insert/",
                   lambda i, n: {"message": MESSAGES[(i + n) % len(MESSAGES)]},
                   connections=args.connections, seconds=args.seconds, warmup=WARMUP)


def grace_ws(url: str, args: argparse.Namespace, token: str) -> LoadResult:
    return ws_load("grace /ws/chat/", url.replace("http://", "ws://") + "/ws/chat/",
                   lambda i, n: {"type": "message", "message": MESSAGES[(i + n) % len(MESSAGES)]},
                   connections=args.connections, seconds=args.seconds, warmup=WARMUP,
                   subprotocols=["grace.v1"], origin=url,
                   additional_headers={"Authorization": f"Bearer {token}"})


def queue_emptied(server: GraceServer) -> None:
    """Remove the follow-up tasks the loads queued, between loads (no worker runs here: the
    bounded queue, 10,000 ready tasks by default, would fill and each reply would report
    ``followup_failed``). What a worker would do, outside the measured time."""
    manage(server.env, "shell", "-c",
           "from executor.models import TaskRecord; TaskRecord.objects.all().delete()")


def measured(server: GraceServer, run: Callable[[], LoadResult],
             seconds: float) -> tuple[LoadResult, float]:
    """The load's result and the server's CPU milliseconds per request."""
    assert server.proc is not None
    before = cpu_seconds(server.proc.pid)
    result = run()
    total = max(1.0, result.requests * (1 + WARMUP / seconds))  # warm-up requests estimated
    return result, (cpu_seconds(server.proc.pid) - before) * 1000 / total


def engine_run(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[tuple[LoadResult, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="grace-bench-chat-") as tmp_dir:
        tmp = Path(tmp_dir)
        with fresh_databases(engine, tmp, "anchor") as anchor_env, \
                fresh_databases(engine, tmp, "grace") as grace_env, \
                AnchorServer(tmp, anchor_env) as anchor, \
                GraceServer(tmp, {**grace_env, **GRACE_ENV, **dict(args.env)}) as grace:
            token = api_token(grace)
            loads: dict[str, tuple[GraceServer, Callable[[], LoadResult]]] = {
                "anchor rest": (anchor, lambda: anchor_rest(anchor.url, args)),
                "grace rest": (grace, lambda: grace_rest(grace.url, args, token)),
            }
            if args.ws:
                loads["anchor ws"] = (anchor, lambda: anchor_ws(anchor.url, args))
                loads["grace ws"] = (grace, lambda: grace_ws(grace.url, args, token))
            for round_no in range(args.rounds):
                names = list(loads) if round_no % 2 == 0 else list(reversed(loads))
                for name in names:
                    server, run = loads[name]
                    if server is grace:
                        queue_emptied(grace)
                    result, cpu = measured(server, run, args.seconds)
                    results.setdefault(name, []).append((result, cpu))
                    print(f"{engine:8} round {round_no + 1}: {result.line()}  "
                          f"CPU {cpu:5.2f} ms/request  statuses {result.statuses}", flush=True)
            errors = [line for line in grace.log().splitlines() if '"ERROR"' in line]
    summary: dict[str, Any] = {"engine": engine}
    print()
    for name, runs in results.items():
        summary[name] = {
            "rps": statistics.mean(r.rps for r, _ in runs),
            "p50": statistics.mean(r.p50 for r, _ in runs),
            "p99": statistics.mean(r.p99 for r, _ in runs),
            "errors": sum(r.errors for r, _ in runs),
            "cpu_ms": statistics.mean(cpu for _, cpu in runs),
        }
        s = summary[name]
        print(f"{engine:8} {name:12} {s['rps']:8.1f} req/s  p50 {s['p50']:7.1f} ms  "
              f"p99 {s['p99']:7.1f} ms  errors {s['errors']}  CPU {s['cpu_ms']:5.2f} ms/request")
    # The goal's anchor is the one-insert endpoint (REST) for both ways of chatting; the
    # websocket chat is also shown against the anchor's websocket insert (a diagnosis: an
    # exchange there is one frame and one insert, no authentication per message).
    comparisons = [("rest", "grace rest", "anchor rest"), ("ws", "grace ws", "anchor rest"),
                   ("ws_vs_ws_insert", "grace ws", "anchor ws")]
    for key, mine, theirs in comparisons:
        if mine not in summary or theirs not in summary:
            continue
        ours, base = summary[mine], summary[theirs]
        summary[f"{key}_ratio"] = ours["rps"] / base["rps"] if base["rps"] else 0.0
        summary[f"{key}_p99_ratio"] = ours["p99"] / base["p99"] if base["p99"] else 0.0
        summary[f"{key}_cpu_ratio"] = ours["cpu_ms"] / base["cpu_ms"] if base["cpu_ms"] else 0.0
        goal = "" if key.startswith("ws_vs") else " (goal >= 0.8)"
        p99_goal = "" if key.startswith("ws_vs") else " (goal <= 2)"
        print(f"{engine:8} {mine} / {theirs}: chat/anchor: throughput "
              f"x{summary[f'{key}_ratio']:.2f}{goal}, p99 x{summary[f'{key}_p99_ratio']:.2f}"
              f"{p99_goal}, CPU per request x{summary[f'{key}_cpu_ratio']:.2f}, "
              f"errors {ours['errors']}{' (goal 0)' if goal else ''}")
    if errors:
        print(f"{engine:8} {len(errors)} ERROR lines in Grace's log; first: {errors[0][:300]}")
    summary["error_lines"] = len(errors)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--engines", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (PostgreSQL + Redis; skipped "
                             "when unreachable)")
    parser.add_argument("--no-ws", dest="ws", action="store_false",
                        help="REST only (no websocket loads)")
    parser.add_argument("--env", action="append", default=[], type=lambda s: s.split("=", 1),
                        metavar="NAME=VALUE", help="extra environment for Grace's server "
                        "(a diagnosis, e.g. GRACE_DISABLED_FEATURES=audit)")
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e in ("sqlite", "postgres")]
    if "postgres" in engines and not postgres_and_redis_reachable():
        print("PostgreSQL or Redis is not reachable: the postgres engine is skipped")
        engines.remove("postgres")
    summaries = [engine_run(engine, args) for engine in engines]
    print(f"\nflags seen in REST chat replies (warm-up included): {FLAGS or 'none'}")
    print("SUMMARY " + json.dumps({"connections": args.connections, "engines": summaries}))


if __name__ == "__main__":
    main()
