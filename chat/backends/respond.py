"""The reply backends' one entry point: the primary backend, else the fallback, else a
fixed apology. This is the only place that decides who answers and with which flags.

``reply_generate(request=..., on_token=..., timeout=...)`` answers within ``timeout``
seconds (default ``GRACE_REPLY_TIMEOUT``; the pipeline passes the respond stage's
budget). The primary gets the time minus ``GRACE_REPLY_FALLBACK_RESERVE``, so that when
it is cancelled at its deadline the fallback still answers in time.

The fallback answers, with flags saying why, when the primary:

- is unavailable (``available()`` False): ``response_fallback``;
- has its circuit open (see ``breaker.py``): ``circuit_open``, ``response_fallback``;
- times out: ``llm_timeout``, ``response_fallback``;
- fails (``ReplyBackendError`` or any other exception): ``llm_error``, ``response_fallback``;
- is not asked at all (``use_primary=False``: the caller's respond stage failed, and
  its own flag says so).

A primary that fails or times out after it has already streamed pieces through
``on_token`` is not replaced (the client has those pieces): its partial text, up to its
last complete sentence, is the reply, with its ``llm_timeout``/``llm_error`` flag and
``response_truncated``. A
fallback that fails or runs out of time leaves the apology, flagged ``fallback_failed``.

Cancelling ``reply_generate`` (a client that went away, a ``stop``) cancels the backend
at once and propagates; the breaker counts it neither way. An exception raised by
``on_token`` itself propagates unchanged.

Every backend call is recorded per backend (``usage.py``): tokens, latency, status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from chat.backends import reply_backend_fallback, reply_backend_primary
from chat.backends.base import (
    ReplyBackend,
    ReplyBackendError,
    ReplyBackendFailed,
    ReplyBackendTimeout,
    ReplyRequest,
    ReplyResult,
    TokenCallback,
    deadline_set,
)
from chat.backends.breaker import breaker_get
from chat.backends.grounding import trim_to_sentence
from chat.backends.usage import REPORTED, UsageEvent, UsageTally, usage_record, usage_tally
from chat.conf import chat_settings

logger = logging.getLogger(__name__)

APOLOGY = "I'm sorry, I can't answer right now. Please try again in a moment."
FALLBACK_MIN_SECONDS = 0.05


@dataclass
class GeneratedReply:
    """The reply ``reply_generate`` settled on, and the flags that say how it came about."""

    result: ReplyResult
    flags: list[str] = field(default_factory=list)


class _Forward:
    """Passes pieces on to the caller's ``on_token``, keeping them and any error the
    callback raised (which must propagate, not count as the backend's failure)."""

    def __init__(self, on_token: TokenCallback | None) -> None:
        self.on_token = on_token
        self.pieces: list[str] = []
        self.errors: list[BaseException] = []

    async def __call__(self, piece: str) -> None:
        self.pieces.append(piece)
        if self.on_token is not None:
            try:
                await self.on_token(piece)
            except BaseException as exc:
                self.errors.append(exc)
                raise

    @property
    def callback(self) -> TokenCallback | None:
        return self if self.on_token is not None else None


def _record(
    backend: str,
    status: str,
    request: ReplyRequest,
    started: float,
    result: ReplyResult | None,
    tally: UsageTally | None = None,
) -> None:
    """One usage event; without the server's counts, ``tally``'s (a stop, a timeout)."""
    usage, counted = (result.usage if result else {}), REPORTED
    if not usage and tally is not None:
        usage, counted = tally.usage()
    usage_record(
        UsageEvent(
            backend=backend,
            status=status,
            model=result.model if result else "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            latency_ms=int((time.monotonic() - started) * 1000),
            first_token_ms=result.first_token_ms if result else None,
            request_id=request.request_id,
            counted=counted,
        )
    )


async def reply_generate(
    *,
    request: ReplyRequest,
    on_token: TokenCallback | None = None,
    timeout: float | None = None,
    use_primary: bool = True,
) -> GeneratedReply:
    """Answer ``request`` within ``timeout`` s; never raises ``ReplyBackendError``."""
    total = timeout if timeout is not None else chat_settings.REPLY_TIMEOUT
    started = time.monotonic()
    primary = reply_backend_primary()
    fallback = reply_backend_fallback()
    flags: list[str] = []
    if use_primary and primary is not fallback:
        reply = await _primary(primary, request, on_token, total, flags)
        if reply is not None:
            return reply
        flags.append("response_fallback")
    left = max(FALLBACK_MIN_SECONDS, total - (time.monotonic() - started))
    return await _fallback(fallback, request, on_token, left, flags)


async def _primary(
    primary: ReplyBackend,
    request: ReplyRequest,
    on_token: TokenCallback | None,
    total: float,
    flags: list[str],
) -> GeneratedReply | None:
    """The primary's reply, or None (with ``flags`` saying why) when the fallback must answer."""
    if not primary.available():
        return None
    breaker = breaker_get(primary.alias)
    started = time.monotonic()
    if not breaker.allow():
        flags.append("circuit_open")
        _record(primary.alias, "circuit_open", request, started, None)
        return None
    budget = max(0.0, total - min(chat_settings.REPLY_FALLBACK_RESERVE, total / 2))
    forward = _Forward(on_token)
    error: ReplyBackendError
    try:
        with deadline_set(budget), usage_tally() as tally:
            async with asyncio.timeout(budget):
                result = await primary.generate(request, on_token=forward.callback)
    except asyncio.CancelledError:
        breaker.release()
        _record(primary.alias, "stopped", request, started, None, tally)
        raise
    except TimeoutError:
        error = ReplyBackendTimeout(f"no reply within {budget:.2f}s")
    except ReplyBackendError as exc:
        error = exc
    except Exception as exc:
        if exc in forward.errors:
            breaker.release()
            raise
        logger.exception("reply backend %s raised unexpectedly", primary.alias)
        error = ReplyBackendFailed(f"{type(exc).__name__}: {exc}")
    else:
        breaker.success()
        _record(primary.alias, "ok", request, started, result, tally)
        return GeneratedReply(result)
    breaker.failure()
    status = "timeout" if isinstance(error, ReplyBackendTimeout) else "error"
    _record(primary.alias, status, request, started, None, tally)
    logger.warning("reply backend %s: %s: %s", primary.alias, status, error)
    flags.append(error.flag)
    if not forward.pieces:
        return None
    flags.append("response_truncated")
    partial = ReplyResult(
        text=trim_to_sentence("".join(forward.pieces)),
        backend=primary.alias,
        finish_reason=status,
        latency_ms=int((time.monotonic() - started) * 1000),
    )
    return GeneratedReply(partial, flags)


async def _fallback(
    fallback: ReplyBackend,
    request: ReplyRequest,
    on_token: TokenCallback | None,
    seconds: float,
    flags: list[str],
) -> GeneratedReply:
    """The fallback's reply within ``seconds``; the apology if even that fails."""
    started = time.monotonic()
    forward = _Forward(on_token)
    try:
        with deadline_set(seconds):
            async with asyncio.timeout(seconds):
                result = await fallback.generate(request, on_token=forward.callback)
    except Exception as exc:
        if exc in forward.errors:
            raise
        status = "timeout" if isinstance(exc, TimeoutError) else "error"
        _record(fallback.alias, status, request, started, None)
        logger.exception("the fallback backend %s failed (%s)", fallback.alias, status)
        flags.append("fallback_failed")
        return GeneratedReply(ReplyResult(text=APOLOGY, backend="none", finish_reason="error"),
                              flags)
    _record(fallback.alias, "ok", request, started, result)
    return GeneratedReply(result, flags)
