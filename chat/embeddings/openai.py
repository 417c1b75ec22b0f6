"""Embeddings from any server speaking ``/v1/embeddings``: Ollama (``nomic-embed-text``),
vLLM, llama.cpp's server (``--embedding``), LM Studio, OpenAI itself.

Options (from the ``GRACE_EMBEDDINGS_*`` settings): ``URL`` (the base URL with ``/v1``),
``MODEL``, ``API_KEY`` (sent as ``Authorization: Bearer``), ``TIMEOUT`` (seconds for each
connect and read of a request; a search waits at most ``SEARCH_TIMEOUT`` of it),
``BATCH`` (texts per request at ingest), ``SIMILARITY_FLOOR``/``SIMILARITY_FULL``.

One pooled ``httpx.Client`` per backend (it is thread-safe). Nothing is retried: ingest
reports the failure and ``reembed_knowledge`` tries again; search answers by keyword.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx

from chat.embeddings.base import (
    EmbeddingsBackend,
    EmbeddingsFailed,
    Vectors,
    vectors_normalise,
)

ERROR_CHARS = 200


class OpenAIEmbeddingsBackend(EmbeddingsBackend):
    similarity_floor = 0.2
    similarity_full = 0.6

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        super().__init__(alias, options)
        self.url = str(options.get("URL", "")).rstrip("/") + "/embeddings"
        self.model = str(options.get("MODEL", ""))
        self.api_key = str(options.get("API_KEY", ""))
        self.timeout = float(options.get("TIMEOUT", 10.0))
        self.batch = max(1, int(options.get("BATCH", 64)))
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"openai:{self.model}"

    def problem(self) -> str | None:
        if not self.url.startswith(("http://", "https://")):
            return f"URL {self.url!r} is not an http(s) URL"
        if not self.model:
            return "no MODEL is set (GRACE_EMBEDDINGS_MODEL)"
        return None

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                self._client = httpx.Client(headers=headers, trust_env=False)
            return self._client

    def embed(self, texts: Sequence[str], *, timeout: float | None = None) -> Vectors:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch):
            rows += self._request(list(texts[start : start + self.batch]), timeout)
        if not rows:
            return vectors_normalise([[0.0]])[:0]
        return vectors_normalise(rows)

    def _request(self, texts: list[str], timeout: float | None) -> list[list[float]]:
        seconds = min(self.timeout, timeout) if timeout else self.timeout
        try:
            response = self._http().post(
                self.url,
                json={"model": self.model, "input": texts},
                timeout=httpx.Timeout(seconds),
            )
        except httpx.TimeoutException:
            raise EmbeddingsFailed(f"{self.url} did not answer within {seconds:g}s") from None
        except httpx.HTTPError as exc:
            raise EmbeddingsFailed(f"cannot reach {self.url}: {exc}") from None
        if response.status_code != 200:
            raise EmbeddingsFailed(
                f"{self.url} answered {response.status_code}: {response.text[:ERROR_CHARS]}"
            )
        try:
            data = sorted(response.json()["data"], key=lambda item: item.get("index", 0))
            vectors = [[float(x) for x in item["embedding"]] for item in data]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmbeddingsFailed(f"{self.url} sent no embeddings: {exc!r}") from None
        if len(vectors) != len(texts) or len({len(v) for v in vectors}) != 1:
            raise EmbeddingsFailed(
                f"{self.url} sent {len(vectors)} vectors of sizes "
                f"{sorted({len(v) for v in vectors})} for {len(texts)} texts"
            )
        return vectors

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
