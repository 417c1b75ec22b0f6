"""The respond stage's one entry point: the primary backend, else the fallback.

``reply_generate(request=..., on_token=..., timeout=...)`` answers within ``timeout``
seconds (default ``GRACE_REPLY_TIMEOUT``; pass the respond stage's budget). The primary
gets the time minus ``GRACE_REPLY_FALLBACK_RESERVE``, so that when it is cancelled at
its deadline the fallback still answers in time.

The fallback answers, with flags saying why, when the primary:

- is unavailable (``available()`` False): ``response_fallback``;
- has its circuit open (see ``breaker.py``): ``circuit_open``, ``response_fallback``;
- times out: ``llm_timeout``, ``response_fallback``;
- fails (``ReplyBackendError`` or any other exception): ``llm_error``, ``response_fallback``.

A primary that fails or times out after it has already streamed pieces through
``on_token`` is not replaced (the client has those pieces): its partial text is the
reply, with its ``llm_timeout``/``llm_error`` flag and ``response_truncated``.

Cancelling ``reply_generate`` (a client that went away, a ``stop``) cancels the backend
at once and propagates; the breaker counts it neither way. An exception raised by
``on_token`` itself propagates unchanged.

Every call is recorded per backend (``usage.py``): tokens, latency, outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings

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
from chat.backends.usage import UsageEvent, usage_record

logger = logging.getLogger(__name__)


@dataclass
class ReplyOutcome:
    result: ReplyResult
    flags: list[str] = field(default_factory=list)


def _record(
    backend: str, outcome: str, request: ReplyRequest, started: float, result: ReplyResult | None
) -> None:
    usage = result.usage if result else {}
    usage_record(
        UsageEvent(
            backend=backend,
            outcome=outcome,
            model=result.model if result else "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            latency_ms=int((time.monotonic() - started) * 1000),
            first_token_ms=result.first_token_ms if result else None,
            request_id=request.request_id,
        )
    )


async def reply_generate(
    *,
    request: ReplyRequest,
    on_token: TokenCallback | None = None,
    timeout: float | None = None,
) -> ReplyOutcome:
    """Answer ``request`` within ``timeout`` s; never raises ``ReplyBackendError``."""
    total = timeout if timeout is not None else settings.GRACE_REPLY_TIMEOUT
    started = time.monotonic()
    primary = reply_backend_primary()
    fallback = reply_backend_fallback()
    flags: list[str] = []
    if primary is not fallback:
        outcome = await _primary(primary, request, on_token, total, flags)
        if outcome is not None:
            return outcome
        flags.append("response_fallback")
    fallback_started = time.monotonic()
    with deadline_set(max(0.0, total - (fallback_started - started))):
        result = await fallback.generate(request, on_token=on_token)
    _record(fallback.alias, "ok", request, fallback_started, result)
    return ReplyOutcome(result, flags)


async def _primary(
    primary: ReplyBackend,
    request: ReplyRequest,
    on_token: TokenCallback | None,
    total: float,
    flags: list[str],
) -> ReplyOutcome | None:
    """The primary's outcome, or None (with ``flags`` saying why) when the fallback must answer."""
    if not primary.available():
        return None
    breaker = breaker_get(primary.alias)
    started = time.monotonic()
    if not breaker.allow():
        flags.append("circuit_open")
        _record(primary.alias, "circuit_open", request, started, None)
        return None
    budget = max(0.0, total - min(settings.GRACE_REPLY_FALLBACK_RESERVE, total / 2))
    pieces: list[str] = []
    callback_errors: list[BaseException] = []

    async def forward(piece: str) -> None:
        pieces.append(piece)
        if on_token is not None:
            try:
                await on_token(piece)
            except BaseException as exc:
                callback_errors.append(exc)
                raise

    error: ReplyBackendError
    try:
        with deadline_set(budget):
            async with asyncio.timeout(budget):
                result = await primary.generate(
                    request, on_token=forward if on_token is not None else None
                )
    except asyncio.CancelledError:
        breaker.release()
        _record(primary.alias, "stopped", request, started, None)
        raise
    except TimeoutError:
        error = ReplyBackendTimeout(f"no reply within {budget:.2f}s")
    except ReplyBackendError as exc:
        error = exc
    except Exception as exc:
        if exc in callback_errors:
            breaker.release()
            raise
        logger.exception("reply backend %s raised unexpectedly", primary.alias)
        error = ReplyBackendFailed(f"{type(exc).__name__}: {exc}")
    else:
        breaker.success()
        _record(primary.alias, "ok", request, started, result)
        return ReplyOutcome(result)
    breaker.failure()
    outcome = "timeout" if isinstance(error, ReplyBackendTimeout) else "error"
    _record(primary.alias, outcome, request, started, None)
    logger.warning("reply backend %s: %s: %s", primary.alias, outcome, error)
    flags.append(error.flag)
    if not pieces:
        return None
    flags.append("response_truncated")
    partial = ReplyResult(
        text="".join(pieces),
        backend=primary.alias,
        finish_reason=outcome,
        latency_ms=int((time.monotonic() - started) * 1000),
    )
    return ReplyOutcome(partial, flags)
