"""Chat throughput: the full pipeline with the fallback backend against a ninja endpoint
doing one ORM insert, on the same server in the same run.

One real daphne process on fresh SQLite files (bench/chat_settings.py adds the baseline
endpoint ``POST /api/bench/insert``). Chat is authenticated with an API token, throttles
are off, the task backend is the product's (the executor: the followup stage queues two
tasks per reply). Each of the 32 connections continues its own conversation with a mix
of messages (a greeting, a question the knowledge base answers, one it cannot, "what did
I say?"). Rounds alternate the two loads; prints req/s, p50, p99, the server's CPU time
per request (steadier than req/s on a shared machine) and chat/insert ratios.
Goal: chat req/s >= 0.8x insert, chat p99 <= 2x insert.

    .venv/bin/python bench/bench_chat.py [--seconds 8] [--rounds 2] [--connections 32]
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

MESSAGES = [
    "Hello!",
    "How do I run the executor worker?",
    "What is the capital of Mongolia?",
    "What did I say?",
    "How do I create an API token?",
    "Thanks!",
]


def measure_insert(url: str, seconds: float, connections: int) -> LoadResult:
    async def request(client, n):
        return await client.post("/api/bench/insert", json={"message": MESSAGES[n % 6]})

    return load("insert", request, base_url=url, connections=connections, seconds=seconds,
                warmup=1.5)


def api_token(server: GraceServer) -> str:
    manage(server.env, "shell", "-c",
           "from django.contrib.auth.models import User; User.objects.create_user('bench')")
    return manage(server.env, "create_api_token", "bench").stdout.strip()


DEGRADED: dict[str, int] = {}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure_chat(url: str, seconds: float, connections: int, token: str) -> LoadResult:
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
                DEGRADED[flag] = DEGRADED.get(flag, 0) + 1
        return response

    return load("chat", request, base_url=url, connections=connections, seconds=seconds,
                warmup=1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="Extra server environment (e.g. GRACE_STAGE_CONN_MAX_AGE=0).")
    args = parser.parse_args()

    env = {
        "DJANGO_SETTINGS_MODULE": "bench.chat_settings",
        "PYTHONPATH": str(ROOT),
        "GRACE_ALLOW_ANONYMOUS": "true",
        "GRACE_THROTTLE_USER": "off",
        "GRACE_THROTTLE_ANON": "off",
    }
    env.update(item.split("=", 1) for item in args.env)
    results: dict[str, list[LoadResult]] = {"insert": [], "chat": []}
    cpu: dict[str, list[float]] = {"insert": [], "chat": []}
    with tempfile.TemporaryDirectory(prefix="grace-bench-chat-") as tmp, GraceServer(
        Path(tmp), env
    ) as server:
        token = api_token(server)
        for round_no in range(args.rounds):
            order = ["insert", "chat"] if round_no % 2 == 0 else ["chat", "insert"]
            for name in order:
                assert server.proc is not None
                cpu_before = cpu_seconds(server.proc.pid)
                if name == "insert":
                    result = measure_insert(server.url, args.seconds, args.connections)
                else:
                    result = measure_chat(server.url, args.seconds, args.connections, token)
                # Warm-up requests are not counted in result.requests: estimate them.
                total = result.requests * (1 + 1.5 / args.seconds)
                cpu[name].append((cpu_seconds(server.proc.pid) - cpu_before) * 1000 / total)
                results[name].append(result)
                print(
                    f"round {round_no + 1}: {result.line()}  statuses {result.statuses}  "
                    f"server CPU {cpu[name][-1]:.2f} ms/request"
                )
        errors = [line for line in server.log().splitlines() if '"ERROR"' in line]
    print()
    summary = {}
    for name, runs in results.items():
        rps = statistics.mean(r.rps for r in runs)
        p50 = statistics.mean(r.p50 for r in runs)
        p99 = statistics.mean(r.p99 for r in runs)
        summary[name] = (rps, p50, p99)
        print(
            f"{name:<8} {rps:8.1f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   "
            f"server CPU {statistics.mean(cpu[name]):5.2f} ms/request"
        )
    (c_rps, c_p50, c_p99), (i_rps, i_p50, i_p99) = summary["chat"], summary["insert"]
    print(
        f"\nchat/insert: throughput {c_rps / i_rps:.2f}x (goal >= 0.8), "
        f"p50 {c_p50 / i_p50:.2f}x, p99 {c_p99 / i_p99:.2f}x (goal <= 2), "
        f"CPU per request {statistics.mean(cpu['chat']) / statistics.mean(cpu['insert']):.2f}x"
    )
    print(f"flags seen in chat replies (all rounds, warm-up included): {DEGRADED or 'none'}")
    if errors:
        print(f"\n{len(errors)} ERROR lines in the server log; first: {errors[0][:300]}")


if __name__ == "__main__":
    main()
