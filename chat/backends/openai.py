"""Replies from any server speaking ``/v1/chat/completions``.

Ollama, vLLM, llama.cpp's server, LM Studio and OpenAI itself. Options (from the
``GRACE_LLM_*`` settings): ``URL`` (the base URL with ``/v1``), ``MODEL``, ``API_KEY``,
``MAX_TOKENS``, ``TEMPERATURE``, ``RETRIES``, ``CONNECT_TIMEOUT``, ``READ_TIMEOUT``
(per network read), ``TIMEOUT`` (total, when the caller gives no deadline),
``STREAM_USAGE`` (ask for the usage chunk; off for servers that reject
``stream_options``).

One pooled ``httpx.AsyncClient`` per event loop (a client cannot outlive or cross its
loop). With ``on_token`` the reply streams over SSE; without, one JSON answer.

Retries: this is the only retry loop (httpx's transport retries are off). Retried, while
the deadline allows: connection failures before anything was sent back, 429 (after its
``Retry-After`` when that fits in the deadline), 502, 503 and 504. Not retried: other 4xx
(the request is wrong or not allowed and will stay so), and 500 (on these servers a 500
is usually deterministic, e.g. a template or model error; retrying doubles the time a
user waits before the fallback, and the breaker handles a server that keeps failing).
Nothing is retried once a reply has started streaming.

Knowledge goes in the prompt (``chat.backends.prompt``) with the instruction to answer
only from it and cite the entries as [n]; the reply's ``sources`` are the entries it
cites.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx

from chat.backends.base import (
    ReplyBackend,
    ReplyBackendFailed,
    ReplyBackendTimeout,
    ReplyBackendUnavailable,
    ReplyRequest,
    ReplyResult,
    TokenCallback,
    deadline_remaining,
)
from chat.backends.completions import ChunkReader, error_message, usage_from
from chat.backends.prompt import cited_hits, prompt_messages
from chat.backends.sse import SSEDecoder, SSEEvent
from chat.conf import BACKEND_DEFAULTS as DEFAULTS

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 502, 503, 504})
ERROR_BODY_LIMIT = 4096
DRAIN_SECONDS = 0.05


class _Retryable(Exception):
    def __init__(self, reason: str, *, retry_after: float | None = None, connect: bool = False):
        super().__init__(reason)
        self.retry_after = retry_after
        self.connect = connect


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend(ReplyBackend):
    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        super().__init__(alias, options)
        self.url = str(options.get("URL", DEFAULTS["LLM_URL"])).rstrip("/")
        self.model = str(options.get("MODEL", DEFAULTS["LLM_MODEL"]))
        self.api_key = str(options.get("API_KEY", DEFAULTS["LLM_API_KEY"]))
        self.max_tokens = int(options.get("MAX_TOKENS", DEFAULTS["LLM_MAX_TOKENS"]))
        self.temperature = float(options.get("TEMPERATURE", DEFAULTS["LLM_TEMPERATURE"]))
        self.retries = int(options.get("RETRIES", DEFAULTS["LLM_RETRIES"]))
        self.backoff = float(options.get("RETRY_BACKOFF", 0.2))
        self.total_timeout = float(options.get("TIMEOUT", 60.0))
        self.stream_usage = bool(options.get("STREAM_USAGE", True))
        self.timeouts = httpx.Timeout(
            connect=float(options.get("CONNECT_TIMEOUT", DEFAULTS["LLM_CONNECT_TIMEOUT"])),
            read=float(options.get("READ_TIMEOUT", DEFAULTS["LLM_READ_TIMEOUT"])),
            write=10.0,
            pool=float(options.get("CONNECT_TIMEOUT", DEFAULTS["LLM_CONNECT_TIMEOUT"])),
        )
        self.limits = httpx.Limits(
            max_connections=int(options.get("MAX_CONNECTIONS", 50)),
            max_keepalive_connections=int(options.get("MAX_KEEPALIVE", 20)),
        )
        self._clients: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], httpx.AsyncClient]]
        self._clients = {}
        self._lock = threading.Lock()

    def available(self) -> bool:
        return bool(self.url)

    def client(self) -> httpx.AsyncClient:
        """The pooled client of the running event loop, made on first use."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for key, (ref, _) in list(self._clients.items()):
                other = ref()
                if other is None or other.is_closed():
                    del self._clients[key]  # its connections died with their loop
            entry = self._clients.get(id(loop))
            if entry is not None and entry[0]() is loop and not entry[1].is_closed:
                return entry[1]
            headers = {"Accept": "application/json, text/event-stream"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(retries=0, limits=self.limits),
                timeout=self.timeouts,
                headers=headers,
            )
            self._clients[id(loop)] = (weakref.ref(loop), client)
            return client

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._clients.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()

    def request_body(self, request: ReplyRequest, *, stream: bool) -> dict[str, Any]:
        """The JSON body sent upstream; the message goes as the last user message, as is."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": prompt_messages(request),
            "max_tokens": request.max_tokens or self.max_tokens,
            "temperature": self.temperature,
            "stream": stream,
        }
        if stream and self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        if not self.url:
            raise ReplyBackendUnavailable("no GRACE_LLM_URL configured")
        remaining = deadline_remaining()
        budget = self.total_timeout if remaining is None else min(remaining, self.total_timeout)
        started = time.monotonic()
        body = self.request_body(request, stream=on_token is not None)
        try:
            async with asyncio.timeout(budget):
                result = await self._retrying(body, on_token, started, started + budget)
        except TimeoutError:
            raise ReplyBackendTimeout(f"no complete reply within {budget:.2f}s") from None
        result.sources = cited_hits(result.text, request.knowledge)
        return result

    async def _retrying(
        self, body: dict[str, Any], on_token: TokenCallback | None, started: float, deadline: float
    ) -> ReplyResult:
        attempt = 0
        while True:
            try:
                return await self._attempt(body, on_token, started)
            except _Retryable as exc:
                attempt += 1
                error = ReplyBackendUnavailable if exc.connect else ReplyBackendFailed
                if attempt > self.retries:
                    raise error(f"{exc} (after {attempt} attempts)") from None
                delay = exc.retry_after
                if delay is None:
                    delay = self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                if time.monotonic() + delay >= deadline:
                    raise error(f"{exc}; a retry in {delay:.2f}s would pass the deadline") from None
                logger.info(
                    "reply backend %s: %s; retry %s in %.2fs", self.alias, exc, attempt, delay
                )
                await asyncio.sleep(delay)

    async def _attempt(
        self, body: dict[str, Any], on_token: TokenCallback | None, started: float
    ) -> ReplyResult:
        url = f"{self.url}/chat/completions"
        try:
            async with self.client().stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    await self._raise_for_status(response)
                if body["stream"]:
                    return await self._read_stream(response, on_token, started)
                return self._parse_json(await response.aread(), started)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Retryable(
                f"cannot connect to {self.url}: {exc or type(exc).__name__}", connect=True
            ) from None
        except httpx.RemoteProtocolError as exc:
            if "without sending" in str(exc):  # a stale pooled connection: nothing was answered
                raise _Retryable(f"{self.url} closed the connection: {exc}") from None
            raise ReplyBackendFailed(f"broken answer from {self.url}: {exc}") from None
        except httpx.ReadTimeout:
            raise ReplyBackendTimeout(
                f"{self.url} sent nothing for {self.timeouts.read}s"
            ) from None
        except httpx.HTTPError as exc:
            raise ReplyBackendFailed(f"{type(exc).__name__} from {self.url}: {exc}") from None

    async def _raise_for_status(self, response: httpx.Response) -> None:
        raw = b""
        async for chunk in response.aiter_bytes():
            raw += chunk
            if len(raw) >= ERROR_BODY_LIMIT:
                break
        detail = raw[:ERROR_BODY_LIMIT].decode("utf-8", "replace").strip()
        try:
            detail = error_message(json.loads(detail).get("error") or detail)
        except (ValueError, AttributeError):
            pass
        reason = f"upstream answered {response.status_code}: {detail[:200]}"
        if response.status_code in RETRY_STATUS:
            raise _Retryable(
                reason, retry_after=retry_after_seconds(response.headers.get("retry-after"))
            )
        raise ReplyBackendFailed(reason)

    def _parse_json(self, raw: bytes, started: float) -> ReplyResult:
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise ReplyBackendFailed(f"malformed answer: {raw[:200]!r}") from None
        if not isinstance(text, str):
            raise ReplyBackendFailed("malformed answer: content is not text")
        latency = int((time.monotonic() - started) * 1000)
        return ReplyResult(
            text=text,
            backend=self.alias,
            model=str(data.get("model") or self.model),
            finish_reason=choice.get("finish_reason") or "stop",
            usage=usage_from(data.get("usage")),
            latency_ms=latency,
            first_token_ms=latency,
        )

    async def _read_stream(
        self, response: httpx.Response, on_token: TokenCallback | None, started: float
    ) -> ReplyResult:
        reader = ChunkReader(model=self.model, started=started, on_token=on_token)
        decoder = SSEDecoder()
        chunks = response.aiter_bytes()
        async for data in chunks:
            for event in decoder.feed(data):
                if await _apply(event, reader):
                    result = reader.result(self.alias)
                    await _drain(chunks)
                    return result
        for event in decoder.close():
            if await _apply(event, reader):
                return reader.result(self.alias)
        if reader.finish_reason is None:
            raise ReplyBackendFailed(
                f"the stream ended before the reply was complete ({len(reader.parts)} pieces)"
            )
        return reader.result(self.alias)


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the body's end after ``[DONE]`` (usually already here) so the connection goes
    back to the pool: a TLS server is not dialled anew for every reply. A server that
    keeps the stream open gets its connection closed instead."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in chunks:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


async def _apply(event: SSEEvent, reader: ChunkReader) -> bool:
    """Feed one SSE event to ``reader``; True at ``[DONE]``."""
    data = event.data.strip()
    if data == "[DONE]":
        return True
    if not data:
        return False
    try:
        chunk = json.loads(data)
    except ValueError:
        raise ReplyBackendFailed(f"malformed stream event: {data[:120]!r}") from None
    if event.event == "error" and isinstance(chunk, dict) and "error" not in chunk:
        chunk = {"error": chunk}
    await reader.feed(chunk)
    return False
