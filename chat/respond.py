"""The respond stage, on the event loop: the reply backends answer the turn
(``chat.backends.respond.reply_generate`` decides who), streaming through the turn's
tokens; the turn's ``stop`` ends generation early and keeps what was said.

A message Hunter blocked gets the refusal instead; a respond stage that fails (an
injected fault) or gets no time leaves the answer to the fallback backend alone.
"""

from __future__ import annotations

import asyncio
import logging
import time

from chat.backends import reply_backend_primary
from chat.backends.base import ReplyRequest, ReplyResult
from chat.backends.respond import reply_generate
from chat.turn import Turn
from grace.faults import fault_inject_async

logger = logging.getLogger(__name__)

REFUSAL = (
    "I can't respond to that message: it was blocked by a security rule. "
    "Please rephrase it without the flagged content."
)
# Seconds the fallback backend gets (within the deadline) after the stage itself failed.
FALLBACK_SECONDS = 2.0


def primary_alias() -> str:
    """The backend that was generating when a reply was cut short."""
    try:
        return reply_backend_primary().alias
    except Exception:
        return ""


def reply_request(turn: Turn) -> ReplyRequest:
    return ReplyRequest(
        message=turn.text, domain=turn.domain, history=turn.history,
        knowledge=turn.knowledge, request_id=turn.request_id,
    )


async def respond_run(name: str, turn: Turn, budget: float) -> str:
    """Give the turn its reply; returns the stage's status."""
    if turn.blocked:
        turn.result = ReplyResult(text=REFUSAL, backend="hunter", finish_reason="blocked")
        await turn.tokens(REFUSAL)
        return "skipped"
    if turn.stop is not None and turn.stop.is_set():
        turn.flag("stopped")
        turn.result = ReplyResult(text="", backend="", finish_reason="stopped")
        return "skipped"
    if budget <= 0:
        await _answer(turn, _fallback_seconds(turn), use_primary=False)
        return "skipped"
    if turn.stop is None:  # nothing to race against: no extra tasks
        return await _attempt(name, turn, budget)
    attempt = asyncio.ensure_future(_attempt(name, turn, budget))
    waiter = asyncio.ensure_future(turn.stop.wait())
    try:
        await asyncio.wait({attempt, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not attempt.done():
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
    if attempt.cancelled():  # stopped: what was said so far is the reply
        turn.flag("stopped")
        turn.result = ReplyResult(
            text=turn.tokens.text, backend=primary_alias(), finish_reason="stopped"
        )
        return "ok"
    return attempt.result()


async def _attempt(name: str, turn: Turn, budget: float) -> str:
    """The stage's fault point, then the backends; a failed stage leaves the answer to
    the fallback."""
    status = "ok"
    try:
        async with asyncio.timeout(budget):
            await fault_inject_async(name, timeout=budget)
    except TimeoutError:
        logger.warning("respond timed out after %.2fs", budget)
        status = "timeout"
    except Exception as exc:
        logger.warning("respond failed: %s: %s", type(exc).__name__, exc)
        status = "error"
    if status == "ok":
        await _answer(turn, budget, use_primary=True)
    else:
        await _answer(turn, _fallback_seconds(turn), use_primary=False)
    return status


def _fallback_seconds(turn: Turn) -> float:
    return max(0.05, min(FALLBACK_SECONDS, turn.deadline - time.monotonic()))


async def _answer(turn: Turn, seconds: float, *, use_primary: bool) -> None:
    reply = await reply_generate(
        request=reply_request(turn), on_token=turn.tokens, timeout=seconds,
        use_primary=use_primary,
    )
    turn.result = reply.result
    for flag in reply.flags:
        turn.flag(flag)
