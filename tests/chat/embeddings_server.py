"""A real OpenAI-compatible ``/v1/embeddings`` server for the tests: a stdlib HTTP server
on a loopback port that embeds with WordLlama (so vectors mean something) and records
each request. ``fail`` makes it answer 503 instead."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chat.embeddings.wordllama import WordLlamaBackend


class EmbeddingsServer:
    def __init__(self, *, api_key: str = "", model: str = "fake-embed") -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail = False
        self.api_key = api_key
        self.model = model
        self.lock = threading.Lock()
        embedder = WordLlamaBackend("server", {})
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")  # once stopped, really gone
                self.end_headers()
                self.close_connection = True
                self.wfile.write(data)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                with server_self.lock:
                    server_self.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "json": body}
                    )
                if server_self.fail:
                    self._answer(503, {"error": {"message": "overloaded"}})
                    return
                wanted = f"Bearer {server_self.api_key}" if server_self.api_key else None
                if wanted and self.headers.get("Authorization") != wanted:
                    self._answer(401, {"error": {"message": "bad key"}})
                    return
                if self.path != "/v1/embeddings" or body.get("model") != server_self.model:
                    self._answer(404, {"error": {"message": f"no {self.path} {body.get('model')}"}})
                    return
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                vectors = embedder.embed(texts)
                data = [
                    {"object": "embedding", "index": i, "embedding": v.tolist()}
                    for i, v in reversed(list(enumerate(vectors)))  # any order: by index
                ]
                self._answer(200, {"object": "list", "data": data, "model": server_self.model})

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> EmbeddingsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
