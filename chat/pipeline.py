"""The reply pipeline: admission (``chat.admission``) and secret masking
(``chat.inspection``), then a loop over ``STAGES`` (inspect -> recall -> respond -> store ->
followup) under one deadline, each stage under its own timeout. A stage that fails or
runs out of time marks ``metadata.stages[stage]``, adds its flag, and the pipeline goes
on (``degraded``).

``chat_reply`` is the one service behind ``POST /api/chat/``, the websocket and SSE.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, get_args

from chat.admission import admission
from chat.backends.base import ReplyResult
from chat.backends.grounding import sources_of
from chat.conf import chat_settings
from chat.inspection import inspect_runner, turn_mask
from chat.respond import primary_alias, respond_run
from chat.schemas import MAX_MESSAGE_CHARS, Domain
from chat.signals import reply_finished, signal_send
from chat.stagerun import StageCancel, stage_run
from chat.stages import conversation_verify, followup_run, recall_apply, recall_run
from chat.store import WITH_FOLLOWUPS, store_run
from chat.turn import TokenCallback, Tokens, Turn
from grace.auth import Owner
from grace.faults import fault_mode
from grace.features import feature_enabled
from grace.request_id import request_id_get, request_id_new

DOMAINS = frozenset(get_args(Domain))

StageRunner = Callable[[str, Turn, float], Coroutine[Any, Any, str]]


@dataclass(frozen=True)
class Stage:
    """One step of the reply pipeline."""

    name: str
    """Its key in ``metadata.stages``, its fault point, its ``GRACE_TIMEOUT_<NAME>``."""
    runner: StageRunner
    """``await runner(name, turn, budget)`` does the stage's work and returns its status."""
    timeout: float
    """Seconds it may take unless ``GRACE_TIMEOUT_<NAME>`` says otherwise."""
    flag: str
    """Added to ``metadata.flags`` when it fails, times out, or has no time left."""
    features: tuple[str, ...] = ()
    """Feature switches that turn it off (when all of them are off): ``skipped``, no flag."""
    does: str = ""
    """What it does, in a few words (its fault point's description)."""
    reserve: float = 0.0
    """At most this share of the deadline is kept for the stages after it."""
    when_blocked: bool = True
    """Whether it runs for a message Hunter blocked (otherwise: ``skipped``, no flag)."""


async def recall_runner(name: str, turn: Turn, budget: float) -> str:
    """Recall in a stage thread; it checks the conversation is the owner's first. When
    inspection left that check to it (``verify_pending``) and recall did not get that far,
    the check runs on its own: a conversation of someone else's is refused (422) whatever
    recall did."""
    status, value = await stage_run(name, recall_run, turn, budget=budget)
    if status == "ok" and value is not None:
        return recall_apply(turn, value)
    if turn.verify_pending and not turn.verified:
        await stage_run(f"{name}_verify", _verify_run, turn, budget=max(budget, 0.5))
    return status


def _verify_run(turn: Turn, cancel: Any) -> None:
    conversation_verify(turn)


async def store_runner(name: str, turn: Turn, budget: float) -> str:
    """The store stage; its transaction carries the follow-up tasks too (one write
    transaction per exchange) unless the followup stage is off or drilled
    (``GRACE_FAULTS=followup=...`` acts out the followup stage's own enqueue)."""
    followup = STAGE_BY_NAME["followup"]
    with_followups = not stage_off(followup) and fault_mode(followup.name) is None
    cancel = StageCancel()
    status, value = await stage_run(name, store_run, turn, with_followups, budget=budget,
                                    cancel=cancel)
    if status == "ok":
        turn.followup = value
    elif cancel.committed == WITH_FOLLOWUPS:
        # Gave up while the transaction was committing: the tasks may be in; never twice.
        turn.followup = "timeout"
    return status


async def followup_runner(name: str, turn: Turn, budget: float) -> str:
    """The followup's status when the store's transaction carried the tasks; otherwise
    (the store failed or was off) it enqueues them in a transaction of its own."""
    if turn.followup is not None:
        return turn.followup
    status, _ = await stage_run(name, followup_run, turn, budget=budget)
    return status


STAGES: tuple[Stage, ...] = (
    Stage("inspect", inspect_runner, 2.0, "inspection_skipped",
          features=("inspection",), does="Hunter's security rules over the message, inline"),
    Stage("recall", recall_runner, 2.0, "recall_failed",
          features=("recall",), when_blocked=False,
          does="the conversation's history and ranked knowledge search"),
    Stage("respond", respond_run, 25.0, "response_fallback", reserve=0.25,
          does="the reply backend (a model), else the deterministic fallback"),
    Stage("store", store_runner, 5.0, "memory_store_failed", reserve=0.1,
          does="the message, the reply and the follow-up tasks stored in one transaction"),
    Stage("followup", followup_runner, 2.0, "followup_failed",
          features=("learning", "causal"),
          does="learning capture and causal tracking enqueued as tasks (in the store's "
          "transaction; on their own when the store did not commit)"),
)
STAGE_BY_NAME = {stage.name: stage for stage in STAGES}

FEATURES = {
    "inspection": "the inspect stage (Hunter) does not run: it reports `skipped`",
    "recall": "the recall stage does not run: it reports `skipped`",
    "learning": "the followup stage enqueues no learning capture",
    "causal": "the followup stage enqueues no causal tracking (both off: `skipped`)",
}


def stage_timeout(stage: Stage) -> float:
    return max(0.01, float(chat_settings.STAGE_TIMEOUTS.get(stage.name, stage.timeout)))


def stage_off(stage: Stage) -> bool:
    """Switched off by ``GRACE_DISABLED_FEATURES`` (every one of its features)."""
    return bool(stage.features) and not any(feature_enabled(name) for name in stage.features)


def stage_budget(stage: Stage, turn: Turn) -> float:
    """Its own timeout, within what the deadline leaves after the reserve for later stages."""
    later = STAGES[STAGES.index(stage) + 1:]
    reserve = min(
        sum(stage_timeout(other) for other in later), stage.reserve * chat_settings.DEADLINE
    )
    return min(stage_timeout(stage), turn.deadline - time.monotonic() - reserve)


async def pipeline_run(turn: Turn) -> None:
    """Every stage in turn; each records its status (and flag) in ``turn``."""
    for stage in STAGES:
        turn.current = stage.name
        if stage_off(stage) or (turn.blocked and not stage.when_blocked):
            turn.stages[stage.name] = "skipped"
            continue
        budget = stage_budget(stage, turn)
        status = await stage.runner(stage.name, turn, budget)
        turn.stages[stage.name] = status
        if status in ("error", "timeout") or (status == "skipped" and budget <= 0):
            turn.flag(stage.flag)


def chat_body(turn: Turn, *, duration_ms: int) -> dict[str, Any]:
    """The REST 200 body (the websocket's ``done``): what the reply says about itself."""
    result = turn.result
    return {
        "response": result.text if result else "",
        "domain": turn.domain,
        "conversation_id": str(turn.conversation_id),
        "message_id": str(turn.reply_id),
        "degraded": turn.degraded,
        "request_id": turn.request_id,
        "metadata": {
            "duration_ms": duration_ms,
            "backend": result.backend if result else "",
            "stages": {stage.name: turn.stages.get(stage.name, "skipped") for stage in STAGES},
            "flags": list(turn.flags),
            "sources": sources_of(result.sources) if result else [],
        },
    }


async def chat_reply(
    *,
    message: str,
    owner: Owner,
    domain: str = "all",
    conversation_id: uuid.UUID | None = None,
    request_id: str | None = None,
    on_token: TokenCallback | None = None,
    stop: asyncio.Event | None = None,
    regenerate_of: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Answer one chat message; the REST 200 body, the websocket's ``done`` frame.

    ``message`` must already be valid (``chat.schemas.ChatIn``: stripped, 1..4000
    characters); ``owner`` is ``request.auth`` (``grace.auth.Owner``); ``domain`` one of the
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

    ``regenerate_of``: the ID of a user message of ``conversation_id`` to answer again
    (``message`` is its stored text, inspected again like any message): recall sees the
    conversation before it, and the store stage keeps the earlier replies as
    alternatives (``superseded``) and stores the new one as the message's current reply
    instead of a new exchange (``chat.regenerate``).

    Returns ``{response, domain, conversation_id, message_id, degraded, request_id,
    metadata: {duration_ms, backend, stages, flags, sources}}`` and sends ``reply_finished``.
    Raises ``ConversationNotFound`` (REST: 422) for a conversation that is not the
    owner's, and ``ChatRefused`` (REST: 503) when the message cannot be answered safely
    now (``busy``: past admission control, ``chat.admission``; ``masking_failed``;
    ``inspection_failed``: see ``chat.inspection``); nothing about the message is stored
    then. The call returns within the
    pipeline deadline (``GRACE_PIPELINE_DEADLINE``) plus a small margin, whatever the
    stages do.
    """
    if not message.strip() or len(message.strip()) > MAX_MESSAGE_CHARS:
        raise ValueError("chat_reply needs a message validated by ChatIn (1..4000 characters)")
    if domain not in DOMAINS:
        raise ValueError(f"chat_reply: unknown domain {domain!r}")
    if regenerate_of is not None and conversation_id is None:
        raise ValueError("chat_reply: regenerate_of needs the message's conversation_id")
    started = time.monotonic()
    turn = Turn(
        owner=owner, message=message.strip(), domain=domain,
        request_id=request_id or request_id_get() or request_id_new(),
        conversation_id=conversation_id or uuid.uuid4(), new_conversation=conversation_id is None,
        deadline=started + chat_settings.DEADLINE, tokens=Tokens(on_token), stop=stop,
        regenerate_of=regenerate_of,
    )
    if regenerate_of is not None:
        turn.user_message_id = regenerate_of
    with admission.admit(owner):
        await turn_mask(turn)
        try:
            await pipeline_run(turn)
        except asyncio.CancelledError:
            _store_detached(turn)
            raise
    body = chat_body(turn, duration_ms=int((time.monotonic() - started) * 1000))
    signal_send(reply_finished, Turn, owner=owner, body=body)
    return body


_detached: set[asyncio.Task[Any]] = set()


def _store_detached(turn: Turn) -> None:
    """The caller went away mid-reply: store what was said, with ``stopped``."""
    if turn.stored or turn.current not in ("recall", "respond"):
        return
    turn.flag("stopped")
    if turn.result is None or not turn.result.text:
        turn.result = ReplyResult(
            text=turn.tokens.text, backend=primary_alias(), finish_reason="stopped"
        )
    store = STAGE_BY_NAME["store"]
    task = asyncio.get_running_loop().create_task(
        stage_run(store.name, store_run, turn, False, budget=stage_timeout(store))
    )
    _detached.add(task)
    task.add_done_callback(_detached.discard)
