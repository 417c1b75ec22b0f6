"""Websocket chat exchanges/s against REST chat requests/s, same server, same run.

    .venv/bin/python bench/bench_ws.py [--connections 32] [--seconds 10]

One daphne process (tests.servers.GraceServer, fallback backend, full pipeline, no
throttling) serves three loads, one after the other, each closed-loop over N
connections authenticated with one API token:

- REST: ``POST /api/chat/`` over N keep-alive HTTP connections (bench/loadgen.py);
- websocket: N sockets on ``/ws/chat/``, each sending ``message`` frames back to back
  and reading ``start``/``token``/``done``;
- echo: N sockets on a bench-only Channels echo consumer (bench/ws_asgi.py): the
  ceiling of a websocket exchange in daphne and Channels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import websockets  # noqa: E402

from bench.loadgen import LoadResult, load  # noqa: E402
from tests.servers import GraceServer, manage  # noqa: E402

MESSAGES = [
    "Hello Grace",
    "What can you do?",
    "How do I run the worker?",
    "Thanks, that helps",
]
TOKEN_SCRIPT = (
    "from django.contrib.auth import get_user_model\n"
    "from grace.auth import api_token_create\n"
    "user = get_user_model().objects.create_user('bench', password='bench-pass-123')\n"
    "print(api_token_create(user=user, name='bench')[1])\n"
)


async def _ws_load(
    url: str, token: str, *, name: str, connections: int, seconds: float, warmup: float
) -> LoadResult:
    result = LoadResult(name=name, requests=0, errors=0, seconds=seconds)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    origin = url.replace("ws://", "http://").split("/ws/")[0]

    async def worker(index: int) -> None:
        async with websockets.connect(
            url,
            subprotocols=["grace.v1"],
            additional_headers={"Authorization": f"Bearer {token}"},
            origin=origin,
            max_size=2**22,
        ) as socket:
            counter = 0
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                message = MESSAGES[(index + counter) % len(MESSAGES)]
                await socket.send(json.dumps({"type": "message", "message": message}))
                ok = True
                while True:
                    frame = json.loads(await socket.recv())
                    if frame["type"] == "done":
                        break
                    if frame["type"] == "error":
                        ok = False
                        break
                t1 = time.perf_counter()
                counter += 1
                if t0 >= measure_from:
                    result.requests += 1
                    result.latencies_ms.append((t1 - t0) * 1000)
                    if not ok:
                        result.errors += 1

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return result


def ws_load(url: str, token: str, **kwargs) -> LoadResult:
    return asyncio.run(_ws_load(url, token, **kwargs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    env = {
        "GRACE_REPLY_BACKEND": "fallback",
        "GRACE_THROTTLE_USER": "off",
        "GRACE_THROTTLE_ANON": "off",
        "GRACE_LOG_LEVEL": "WARNING",
    }
    with tempfile.TemporaryDirectory() as tmp:
        with GraceServer(Path(tmp), env, app="bench.ws_asgi:application") as server:
            token = manage(server.env, "shell", "-c", TOKEN_SCRIPT).stdout.strip().splitlines()[-1]
            headers = {"Authorization": f"Bearer {token}"}
            ws_url = server.url.replace("http://", "ws://")
            common = {
                "connections": args.connections,
                "seconds": args.seconds,
                "warmup": args.warmup,
            }

            def rest_request(client, n):
                message = MESSAGES[n % len(MESSAGES)]
                return client.post("/api/chat/", json={"message": message}, headers=headers)

            rest = load("REST POST /api/chat/", rest_request, base_url=server.url, **common)
            chat = ws_load(f"{ws_url}/ws/chat/", token, name="websocket /ws/chat/", **common)
            echo = ws_load(f"{ws_url}/ws/echo/", token, name="websocket echo (ceiling)", **common)

    print(f"{args.connections} connections, {args.seconds:.0f} s each, fallback backend")
    for result in (rest, chat, echo):
        print(result.line())
    if rest.statuses.get(200, 0) != rest.requests:
        print(f"REST statuses: {rest.statuses}")
    print(f"websocket / REST: {chat.rps / rest.rps:.2f}x (goal >= 1.0x)" if rest.rps else "")
    print(f"websocket / echo ceiling: {chat.rps / echo.rps:.2f}x" if echo.rps else "")
    chat_p50 = statistics.median(chat.latencies_ms or [0])
    print(f"p50 websocket {chat_p50:.1f} ms vs REST {rest.p50:.1f} ms")


if __name__ == "__main__":
    main()
