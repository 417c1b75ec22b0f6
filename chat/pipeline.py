"""The reply pipeline: inspect -> recall -> respond -> store -> followup, under one
deadline, each stage under its own timeout. A stage that fails or runs out of time marks
``metadata.stages[stage]``, adds its flag, and the pipeline goes on (``degraded``).

``chat_reply`` is the one service behind ``POST /api/chat/``, the websocket and SSE.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, get_args

from grace.auth import Owner
from chat.backends import reply_backend_fallback, reply_backend_primary
from chat.backends.base import ReplyRequest, ReplyResult
from chat.backends.respond import reply_generate
from chat.conf import chat_settings
from chat.faults import FaultInjected
from chat.outcome import (
    FAILURE_FLAGS,
    INFORMATIONAL_FLAGS,
    TokenCallback,
    Tokens,
    chat_body,
    is_degraded,
)
from chat.schemas import MAX_MESSAGE_CHARS, Domain
from chat.stagerun import stage_run, thread_hang
from chat.stages import (
    ConversationNotFound,
    Turn,
    followup_run,
    inspect_run,
    recall_run,
    store_run,
)
from grace.features import stage_disabled
from grace.request_id import request_id_get, request_id_new

logger = logging.getLogger(__name__)

DOMAINS = frozenset(get_args(Domain))

REFUSAL = (
    "I can't respond to that message: it was blocked by a security rule. "
    "Please rephrase it without the flagged content."
)
APOLOGY = "I'm sorry, I can't answer right now. Please try again in a moment."
FALLBACK_BUDGET = 2.0


__all__ = [
    "FAILURE_FLAGS", "INFORMATIONAL_FLAGS", "ChatUnavailable", "ConversationNotFound",
    "chat_body", "chat_reply", "is_degraded",
]


class ChatUnavailable(Exception):
    """The exchange cannot be served at all (REST: 503). Reserved: the current pipeline
    degrades instead, since the stages check the conversation themselves."""


def _primary_alias() -> str:
    """The backend that was generating when a reply was cut short."""
    try:
        return reply_backend_primary().alias
    except Exception:
        return ""


class _Pipeline:
    def __init__(self, turn: Turn, deadline: float, tokens: Tokens, stop: asyncio.Event | None):
        self.turn = turn
        self.deadline = deadline
        self.tokens = tokens
        self.stop = stop
        self.current = ""

    def budget(self, stage: str, reserve: float = 0.0) -> float:
        remaining = self.deadline - time.monotonic() - reserve
        return min(chat_settings.timeout(stage), remaining)

    def mark(self, stage: str, status: str) -> None:
        """Record a stage's status; a failed or skipped stage adds its flag."""
        self.turn.stages[stage] = status
        if status in ("error", "timeout", "skipped"):
            self.turn.flag(FAILURE_FLAGS[stage])

    async def sync_stage(self, stage: str, func: Callable[..., Any], reserve: float = 0.0) -> Any:
        self.current = stage
        if stage_disabled(stage):  # GRACE_DISABLED_FEATURES: skipped, no flag, not degraded
            self.turn.stages[stage] = "skipped"
            return None
        status, value = await stage_run(stage, func, self.turn, budget=self.budget(stage, reserve))
        self.mark(stage, status)
        return value

    async def run(self) -> None:
        turn = self.turn
        inspection = await self.sync_stage("inspect", inspect_run)
        if inspection is None:
            turn.text = turn.message
        else:
            turn.inspection = inspection
            turn.text = inspection.text
            turn.stages["inspect"] = inspection.status
            for flag, on in (
                ("blocked", inspection.blocked),
                ("redacted", inspection.redacted),
                ("security_alert", inspection.flagged or inspection.blocked),
                ("inspection_incomplete", bool(inspection.incomplete)),
            ):
                if on:
                    turn.flag(flag)
        if turn.blocked:
            turn.stages["recall"] = turn.stages["respond"] = "skipped"
            turn.result = ReplyResult(text=REFUSAL, backend="hunter", finish_reason="blocked")
            await self.tokens(REFUSAL)
        else:
            recalled = await self.sync_stage("recall", recall_run)
            if recalled is not None:
                turn.history, turn.knowledge = recalled
            await self.respond()
        reserve_followup = min(chat_settings.timeout("followup"), 0.1 * chat_settings.DEADLINE)
        await self.sync_stage("store", store_run, reserve=reserve_followup)
        await self.sync_stage("followup", followup_run)

    def request(self) -> ReplyRequest:
        turn = self.turn
        return ReplyRequest(
            message=turn.text, domain=turn.domain, history=turn.history,
            knowledge=turn.knowledge, request_id=turn.request_id,
        )

    async def respond(self) -> None:
        turn = self.turn
        self.current = "respond"
        reserve = min(
            chat_settings.timeout("store") + chat_settings.timeout("followup"),
            0.25 * chat_settings.DEADLINE,
        )
        budget = self.budget("respond", reserve)
        if self.stop is not None and self.stop.is_set():
            turn.stages["respond"] = "skipped"
            turn.flag("stopped")
            turn.result = ReplyResult(text="", backend="", finish_reason="stopped")
            return
        if budget <= 0:
            self.mark("respond", "skipped")
            turn.result = await self.fallback()
            return
        status = await self._generate(budget)
        turn.stages["respond"] = status
        if status == "ok":
            return
        turn.flag(FAILURE_FLAGS["respond"])
        if self.tokens.pieces:  # the client has these pieces: they are the reply
            turn.flag("response_truncated")
            turn.result = ReplyResult(
                text=self.tokens.text, backend=_primary_alias(), finish_reason=status
            )
        else:
            turn.result = await self.fallback()

    async def _generate(self, budget: float) -> str:
        turn = self.turn
        mode = chat_settings.FAULTS.get("respond")

        async def generate() -> None:
            if mode == "error":
                raise FaultInjected("injected fault: respond=error")
            if mode == "timeout":
                await asyncio.sleep(budget + 1.0)
            if mode == "hang":
                await thread_hang(chat_settings.FAULT_HANG_SECONDS)
            outcome = await reply_generate(
                request=self.request(), on_token=self.tokens, timeout=budget
            )
            turn.result = outcome.result
            for flag in outcome.flags:
                turn.flag(flag)

        if self.stop is None:  # nothing to race against: no extra tasks
            timer = asyncio.timeout(budget)
            try:
                async with timer:
                    await generate()
            except TimeoutError:
                if not timer.expired():
                    logger.warning("respond failed: TimeoutError", exc_info=True)
                    return "error"
                logger.warning("respond timed out after %.2fs", budget)
                return "timeout"
            except Exception as exc:
                logger.warning("respond failed: %s: %s", type(exc).__name__, exc)
                return "error"
            return "ok"
        task = asyncio.ensure_future(generate())
        waiter = asyncio.ensure_future(self.stop.wait())
        try:
            async with asyncio.timeout(budget):
                await asyncio.wait({task, waiter}, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            if self.stop.is_set():
                turn.flag("stopped")
                turn.result = ReplyResult(
                    text=self.tokens.text, backend=_primary_alias(), finish_reason="stopped"
                )
                return "ok"
            logger.warning("respond timed out after %.2fs", budget)
            return "timeout"
        failure = task.exception()
        if failure is not None:
            logger.warning("respond failed: %s: %s", type(failure).__name__, failure)
            return "error"
        return "ok"

    async def fallback(self) -> ReplyResult:
        """The deterministic backend, directly; a fixed apology if even that fails."""
        self.tokens.pieces.clear()
        budget = max(0.05, min(FALLBACK_BUDGET, self.deadline - time.monotonic()))
        try:
            async with asyncio.timeout(budget):
                return await reply_backend_fallback().generate(self.request(), on_token=self.tokens)
        except Exception:
            logger.exception("the fallback backend failed")
            self.turn.flag("fallback_failed")
            return ReplyResult(text=APOLOGY, backend="none", finish_reason="error")


async def chat_reply(
    *,
    message: str,
    owner: Owner,
    domain: str = "all",
    conversation_id: uuid.UUID | None = None,
    request_id: str | None = None,
    on_token: TokenCallback | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Answer one chat message; the REST 200 body, the websocket's ``done`` frame.

    ``message`` must already be valid (``chat.schemas.ChatIn``: stripped, 1..4000
    characters); ``owner`` is ``request.auth`` (``chat.auth.Owner``); ``domain`` one of the
    ``ChatIn`` domains (``ValueError`` for either otherwise); ``conversation_id`` continues
    one of the owner's conversations (``None`` starts one). ``request_id`` defaults to the
    current one.

    ``on_token(piece)`` is awaited with each piece of the reply as it is generated (a
    refusal or a fallback answer arrives as pieces too). The pieces are a preview: after
    a failure mid-way the final ``response`` may differ; a callback that raises is not
    called again and does not stop the reply.

    ``stop``: when set during generation, generation is cancelled and the partial reply
    is stored and returned with the flag ``stopped``. Cancelling the coroutine instead
    (a client gone) stores the partial reply in the background and re-raises.

    Returns ``{response, domain, conversation_id, message_id, degraded, request_id,
    metadata: {duration_ms, backend, stages, flags}}``. Raises ``ConversationNotFound``
    (REST: 422) for a conversation that is not the owner's; nothing about the message
    is stored then. The call returns within the pipeline deadline
    (``GRACE_PIPELINE_DEADLINE``) plus a small margin, whatever the stages do.
    """
    if not message.strip() or len(message.strip()) > MAX_MESSAGE_CHARS:
        raise ValueError("chat_reply needs a message validated by ChatIn (1..4000 characters)")
    if domain not in DOMAINS:
        raise ValueError(f"chat_reply: unknown domain {domain!r}")
    started = time.monotonic()
    deadline = started + chat_settings.DEADLINE
    rid = request_id or request_id_get() or request_id_new()
    turn = Turn(
        owner=owner, message=message.strip(), domain=domain, request_id=rid,
        conversation_id=conversation_id or uuid.uuid4(), new_conversation=conversation_id is None,
    )
    pipeline = _Pipeline(turn, deadline, Tokens(on_token), stop)
    try:
        await pipeline.run()
    except asyncio.CancelledError:
        _store_detached(pipeline)
        raise
    body = chat_body(turn, duration_ms=int((time.monotonic() - started) * 1000))
    from grace.observers import exchange_observe

    exchange_observe(owner=owner, body=body)  # audit, event bus, metrics: never waits or raises
    return body


_detached: set[asyncio.Task[Any]] = set()


def _store_detached(pipeline: _Pipeline) -> None:
    """The caller went away mid-reply: store what was said, with ``stopped``."""
    turn = pipeline.turn
    if turn.stored or pipeline.current not in ("recall", "respond"):
        return
    turn.flag("stopped")
    if turn.result is None or not turn.result.text:
        turn.result = ReplyResult(
            text=pipeline.tokens.text, backend=_primary_alias(), finish_reason="stopped"
        )
    budget = chat_settings.timeout("store")
    store = stage_run("store", store_run, turn, budget=budget)
    task = asyncio.get_running_loop().create_task(store)
    _detached.add(task)
    task.add_done_callback(_detached.discard)
