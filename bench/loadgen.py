"""A small closed-loop HTTP load generator: N connections, each sending requests back
to back for a fixed time; prints nothing itself, returns the figures."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class LoadResult:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0

    @property
    def p99(self) -> float:
        return self.percentile(99)

    def line(self) -> str:
        return (
            f"{self.name:<28} {self.rps:9.1f} req/s  p50 {self.p50:7.1f} ms  "
            f"p99 {self.p99:7.1f} ms  ({self.requests} requests, {self.errors} errors)"
        )


async def _run(
    name: str,
    make_request: Callable[[httpx.AsyncClient, int], Any],
    *,
    connections: int,
    seconds: float,
    warmup: float,
    base_url: str,
) -> LoadResult:
    result = LoadResult(name=name, requests=0, errors=0, seconds=seconds)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + seconds

        async def worker(index: int) -> None:
            counter = 0
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    response = await make_request(client, index * 1_000_000 + counter)
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                t1 = time.perf_counter()
                counter += 1
                if t0 >= measure_from:
                    result.requests += 1
                    result.latencies_ms.append((t1 - t0) * 1000)
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if status == 0 or status >= 500:
                        result.errors += 1

        await asyncio.gather(*(worker(i) for i in range(connections)))
    return result


def load(
    name: str,
    make_request: Callable[[httpx.AsyncClient, int], Any],
    *,
    base_url: str,
    connections: int = 32,
    seconds: float = 10.0,
    warmup: float = 2.0,
) -> LoadResult:
    """Run ``make_request(client, n)`` (a coroutine returning a response) in a loop."""
    return asyncio.run(
        _run(
            name,
            make_request,
            connections=connections,
            seconds=seconds,
            warmup=warmup,
            base_url=base_url,
        )
    )


async def _ws_run(
    name: str,
    url: str,
    frame: Callable[[int, int], dict[str, Any]],
    *,
    connections: int,
    seconds: float,
    warmup: float,
    connect_kwargs: dict[str, Any],
) -> LoadResult:
    import json

    import websockets

    result = LoadResult(name=name, requests=0, errors=0, seconds=seconds)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def worker(index: int) -> None:
        try:
            socket = await websockets.connect(url, max_size=2**22, **connect_kwargs)
        except (OSError, websockets.WebSocketException):
            result.errors += 1
            return
        async with socket:
            counter = 0
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                ok = True
                try:
                    await socket.send(json.dumps(frame(index, counter)))
                    while True:
                        reply = json.loads(await socket.recv())
                        if reply.get("type") in ("done", "error"):
                            ok = reply["type"] == "done"
                            break
                except (OSError, websockets.WebSocketException):
                    ok = False
                t1 = time.perf_counter()
                counter += 1
                if t0 >= measure_from:
                    result.requests += 1
                    result.latencies_ms.append((t1 - t0) * 1000)
                    status = 200 if ok else 0
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if not ok:
                        result.errors += 1
                if not ok and socket.state.name != "OPEN":
                    return

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return result


def ws_load(
    name: str,
    url: str,
    frame: Callable[[int, int], dict[str, Any]],
    *,
    connections: int = 32,
    seconds: float = 10.0,
    warmup: float = 2.0,
    **connect_kwargs: Any,
) -> LoadResult:
    """N websockets, each sending ``frame(socket_index, counter)`` and reading frames up to
    a ``done`` (or ``error``) frame, back to back; one exchange counts as one request."""
    return asyncio.run(_ws_run(name, url, frame, connections=connections, seconds=seconds,
                               warmup=warmup, connect_kwargs=connect_kwargs))
