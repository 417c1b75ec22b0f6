"""Where one chat exchange's cost goes: CPU per stage, database round trips, write
transactions and thread hops, for Grace's ``POST /api/chat/`` and ``/ws/chat/`` and for
the anchor's one insert (bench/anchor/), each in a process of its own.

Each target runs in-process through its real ASGI application (httpx's ASGI transport for
HTTP, Channels' communicator for websockets) on fresh databases, on the shipped defaults
(Grace: fallback backend, throttles off, as bench_chat.py), one exchange at a time after a
warm-up, so the process's CPU clock can be split between the stages:

- **CPU**: ``time.process_time()`` (every thread of the process) around each pipeline
  stage, around masking (admission included) and the ``reply_finished`` observers; the
  request path is the rest of the exchange (ASGI, middleware, authentication, parsing,
  the response); ``background`` is what the process's own threads (audit writer, metrics
  flusher, event bus) spent after the exchanges, when asked to flush.
- **round trips**: SQL statements sent, per database, counted by an ``execute_wrapper``
  on every connection (``connection_created``), split into reads and writes.
- **write transactions**: transactions that wrote (a commit after writes, or a write in
  autocommit mode).
- **thread hops**: work handed to another thread (``Executor.submit``, asgiref's
  ``CurrentThreadExecutor`` included) plus threads started.

    .venv/bin/python bench/profile_exchange.py [--exchanges 200] [--engines sqlite,postgres]

Prints one table per engine and one ``SUMMARY {json}`` line for bench/run_all.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_chat import MESSAGES  # noqa: E402  (the same mix as the load)
from bench.instrument import SqlCounts  # noqa: E402


class Tally:
    """Thread hops and CPU per stage; ``SQL`` counts the statements and transactions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def snapshot(self) -> Counter[str]:
        with self.lock:
            counts = Counter(self.counts)
        sql = SQL.snapshot()
        for kind in ("reads", "writes"):
            for alias, n in sql[kind].items():
                counts[f"sql:{alias}:{kind[:-1]}"] = n
        for alias, n in sql["write_transactions"].items():
            counts[f"tx:{alias}"] = n
        return counts


TALLY = Tally()
SQL = SqlCounts()


def instrument_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.current_thread_executor import CurrentThreadExecutor

    for cls in (ThreadPoolExecutor, CurrentThreadExecutor):
        original = cls.submit

        def submit(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            TALLY.add("hops")
            return _original(self, *args, **kwargs)

        cls.submit = submit  # type: ignore[method-assign]
    original_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        TALLY.add("threads")
        original_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]


def instrument_stages() -> list[str]:
    """Wrap every pipeline stage, masking and the observers with a CPU timer."""
    import dataclasses

    from chat import pipeline

    def timed(name: str, func: Any) -> Any:
        async def runner(*args: Any, **kwargs: Any) -> Any:
            before = time.process_time()
            try:
                return await func(*args, **kwargs)
            finally:
                TALLY.add(f"cpu_us:{name}", int((time.process_time() - before) * 1e6))

        return runner

    names = [stage.name for stage in pipeline.STAGES]
    pipeline.STAGES = tuple(  # type: ignore[misc]
        dataclasses.replace(stage, runner=timed(stage.name, stage.runner))
        for stage in pipeline.STAGES
    )
    pipeline.turn_mask = timed("mask", pipeline.turn_mask)  # type: ignore[attr-defined]
    original_send = pipeline.signal_send

    def signal_send(*args: Any, **kwargs: Any) -> Any:
        before = time.process_time()
        try:
            return original_send(*args, **kwargs)
        finally:
            TALLY.add("cpu_us:observers", int((time.process_time() - before) * 1e6))

    pipeline.signal_send = signal_send  # type: ignore[attr-defined]
    return ["mask", *names, "observers"]


def flush_background() -> None:
    """Let the process's own writer threads do what the exchanges left them."""
    from django.apps import apps

    if not apps.is_installed("grace"):  # the anchor has none
        return
    from grace.audit_writer import audit_flush
    from grace.metrics.buffer import metrics_flush

    audit_flush(10)
    metrics_flush(10)


def child(target: str, kind: str, exchanges: int) -> dict[str, Any]:
    """Run in a process of its own (settings chosen by the parent's environment)."""
    import asyncio

    import django

    django.setup()
    SQL.install()
    instrument_threads()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    stages: list[str] = []
    if target == "grace":
        call_command("migrate", database="metrics", verbosity=0, interactive=False)
        stages = instrument_stages()
        from django.contrib.auth import get_user_model

        from grace.auth import api_token_create

        user = get_user_model().objects.create_user("profile")
        token = api_token_create(user=user, name="profile")[1]
        from grace.asgi import application
    else:
        token = ""
        from bench.anchor.asgi import application

    async def http_exchanges(n: int) -> None:
        import httpx

        transport = httpx.ASGITransport(app=application)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            conversation = None
            for i in range(n):
                message = MESSAGES[i % len(MESSAGES)]
                if target == "grace":
                    body: dict[str, Any] = {"message": message}
                    if conversation and i % 20:
                        body["conversation_id"] = conversation
                    response = await client.post("/api/chat/", json=body, headers=headers)
                    conversation = response.json().get("conversation_id")
                else:
                    response = await client.post("/api/insert", json={"message": message})
                if response.status_code != 200:
                    raise SystemExit(f"{target}: {response.status_code} {response.text[:300]}")

    async def ws_exchanges(n: int) -> None:
        from channels.testing import WebsocketCommunicator

        if target == "grace":
            communicator = WebsocketCommunicator(
                application, "/ws/chat/", subprotocols=["grace.v1"],
                headers=[(b"authorization", f"Bearer {token}".encode()),
                         (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
        else:
            communicator = WebsocketCommunicator(application, "/ws/insert/")
        connected, _ = await communicator.connect(timeout=10)
        if not connected:
            raise SystemExit(f"{target}: websocket refused")
        for i in range(n):
            frame = {"message": MESSAGES[i % len(MESSAGES)]}
            if target == "grace":
                frame["type"] = "message"
            await communicator.send_json_to(frame)
            while True:
                reply = await communicator.receive_json_from(timeout=30)
                if reply.get("type") == "error":
                    raise SystemExit(f"{target}: {reply}")
                if reply.get("type") == "done":
                    break
        await communicator.disconnect()

    run = http_exchanges if kind == "rest" else ws_exchanges
    asyncio.run(run(min(30, exchanges)))  # warm-up: imports, caches, connections
    flush_background()
    before, cpu_before = TALLY.snapshot(), time.process_time()
    asyncio.run(run(exchanges))
    cpu_foreground = time.process_time() - cpu_before
    flush_background()
    cpu_total = time.process_time() - cpu_before
    after = TALLY.snapshot()
    diff = {key: after[key] - before.get(key, 0) for key in after}
    per = {key: value / exchanges for key, value in diff.items()}
    stage_ms = {name: per.get(f"cpu_us:{name}", 0) / 1000 for name in stages}
    return {
        "target": target, "kind": kind, "exchanges": exchanges,
        "cpu_ms": cpu_total * 1000 / exchanges,
        "background_ms": (cpu_total - cpu_foreground) * 1000 / exchanges,
        "stages_ms": stage_ms,
        "request_path_ms": cpu_foreground * 1000 / exchanges - sum(stage_ms.values()),
        "round_trips": {key[4:]: value for key, value in per.items() if key.startswith("sql:")},
        "write_transactions": {key[3:]: value for key, value in per.items()
                               if key.startswith("tx:")},
        "thread_hops": per.get("hops", 0), "threads_started": per.get("threads", 0),
    }


def measure(target: str, kind: str, engine: str, exchanges: int) -> dict[str, Any]:
    from bench.services import fresh_databases

    with tempfile.TemporaryDirectory(prefix="grace-profile-") as tmp_dir, \
            fresh_databases(engine, Path(tmp_dir), target) as databases:
        env = {**os.environ, **databases, "PYTHONPATH": str(ROOT),
               "DJANGO_SETTINGS_MODULE": ("grace.settings" if target == "grace"
                                          else "bench.anchor.settings"),
               "GRACE_REPLY_BACKEND": "fallback", "GRACE_THROTTLE_USER": "off",
               "GRACE_THROTTLE_ANON": "off", "GRACE_LOG_LEVEL": "WARNING"}
        out = subprocess.run(
            [sys.executable, __file__, "--child", f"{target}:{kind}",
             "--exchanges", str(exchanges)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if out.returncode:
            raise SystemExit(f"{target} {kind} on {engine} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def show(engine: str, results: list[dict[str, Any]]) -> None:
    print(f"\n{engine}: cost of one exchange (mean of {results[0]['exchanges']}, "
          "one at a time, in-process)")
    header = f"{'':36}" + "".join(f"{r['target'] + ' ' + r['kind']:>14}" for r in results)
    print(header)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, values: list[Any], fmt: str = "{:.2f}") -> None:
        rows.append((label, [fmt.format(v) if isinstance(v, int | float) else str(v)
                             for v in values]))

    row("CPU ms, all", [r["cpu_ms"] for r in results])
    row("  request path", [r["request_path_ms"] for r in results])
    stage_names: list[str] = []
    for r in results:
        stage_names += [name for name in r["stages_ms"] if name not in stage_names]
    for name in stage_names:
        row(f"  {name}", [r["stages_ms"].get(name, "-") for r in results])
    row("  background threads", [r["background_ms"] for r in results])
    aliases = sorted({key for r in results for key in r["round_trips"]})
    for key in aliases:
        row(f"round trips {key}", [r["round_trips"].get(key, 0) for r in results], "{:.1f}")
    tx_aliases = sorted({key for r in results for key in r["write_transactions"]})
    for key in tx_aliases:
        row(f"write transactions {key}", [r["write_transactions"].get(key, 0) for r in results],
            "{:.2f}")
    row("thread hops", [r["thread_hops"] for r in results], "{:.1f}")
    row("threads started", [r["threads_started"] for r in results], "{:.2f}")
    for label, values in rows:
        print(f"{label:36}" + "".join(f"{v:>14}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", type=int, default=200)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        target, kind = args.child.split(":")
        print(json.dumps(child(target, kind, args.exchanges)))
        return
    from bench.services import postgres_and_redis_reachable

    engines = [e for e in args.engines.split(",") if e in ("sqlite", "postgres")]
    if "postgres" in engines and not postgres_and_redis_reachable():
        print("PostgreSQL or Redis is not reachable: the postgres engine is skipped")
        engines.remove("postgres")
    summary = []
    for engine in engines:
        results = [measure(target, kind, engine, args.exchanges)
                   for target in ("anchor", "grace") for kind in ("rest", "ws")]
        show(engine, results)
        summary.append({"engine": engine, "results": results})
    print("SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
