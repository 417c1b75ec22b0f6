"""The security side of a turn: secret masking, then Hunter's rules.

Both run inline, on the event loop, before any stage thread is involved: the rules run
on RE2 (linear time, about a millisecond for a 4,000-character message), so their
budget is their own running time, never a wait for a thread of the stage pool, and no
load can make them time out.

- **Masking** (the ``redact`` rules) runs on every message, first: it is not part of
  what ``GRACE_DISABLED_FEATURES=inspection`` turns off, and when it cannot run (its
  fault point ``mask``, the rules unreadable) the message is refused with
  ``ChatRefused("masking_failed")`` and nothing about it is stored. Everything after it
  (the stages, the database, the logs, the tasks, a model) sees only the masked text.
- **Inspection** (every rule, on the normalised text) is the ``inspect`` stage. When it
  fails (its fault point), ``GRACE_INSPECTION_ON_FAILURE`` decides: ``answer`` (the
  default: answered, ``inspection_skipped``, secrets already masked) or ``refuse``
  (``ChatRefused("inspection_failed")``).

The security events and the conversation's ownership check need the database: they
run in a stage thread afterwards, and the verdict stands even when they cannot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from chat.conf import chat_settings
from chat.exceptions import ChatRefused
from chat.security import (
    Inspection,
    hunter_inspect,
    hunter_mask,
    hunter_rules,
    security_events_record,
)
from chat.stagerun import stage_run, write_serialized
from chat.stages import conversation_verify
from chat.turn import Turn
from grace.faults import fault_inject_async
from grace.features import feature_enabled

logger = logging.getLogger(__name__)

MASK_POINT = "mask"
MASK_DOES = "masking secrets in a message (it is refused: 503 `masking_failed`)"
MASK_TIMEOUT = 2.0
"""Seconds masking may wait for the rules to load (matching itself is not a wait)."""
REFUSED_RETRY_AFTER = 5


async def turn_mask(turn: Turn) -> None:
    """Mask the secrets in ``turn.message`` into ``turn.text``; ``ChatRefused`` when that
    cannot be done."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(MASK_TIMEOUT):
            await fault_inject_async(MASK_POINT, timeout=MASK_TIMEOUT)
            rules = await hunter_rules()
        masked = hunter_mask(text=turn.message, rules=rules)
    except Exception as exc:
        logger.warning(
            "secret masking failed after %.3fs (%s): the message is refused",
            time.monotonic() - started,
            type(exc).__name__,
        )
        raise ChatRefused(
            "Grace could not check this message for secrets, so it did not accept it; "
            "nothing of it was kept. Try again in a moment.",
            error="masking_failed",
            retry_after=REFUSED_RETRY_AFTER,
        ) from None
    turn.rules = rules
    turn.masked = masked
    turn.text = masked.text
    if masked.redacted:
        turn.flag("redacted")


async def inspect_runner(name: str, turn: Turn, budget: float) -> str:
    """The ``inspect`` stage: every rule over the message, inline; then its events."""
    try:
        async with asyncio.timeout(max(budget, 0.01)):
            await fault_inject_async(name, timeout=budget)
        inspection = hunter_inspect(text=turn.message, rules=turn.rules, masked=turn.masked)
    except Exception as exc:
        status = "timeout" if isinstance(exc, TimeoutError) else "error"
        logger.warning("inspection failed (%s: %s)", status, type(exc).__name__)
        if chat_settings.INSPECTION_ON_FAILURE == "refuse":
            raise ChatRefused(
                "Grace could not inspect this message, so it did not answer it; nothing "
                "of it was kept. Try again in a moment.",
                error="inspection_failed",
                retry_after=REFUSED_RETRY_AFTER,
            ) from None
        if turn.masked is not None and turn.masked.matches:
            await _record(name, turn, turn.masked, budget)
        return status
    verdict = inspect_apply(turn, inspection)
    await _record(name, turn, inspection, budget)
    return verdict


def recall_will_run(turn: Turn) -> bool:
    """Whether the recall stage runs for this turn: the message is not blocked and the
    ``recall`` feature (the stage's one switch, ``chat.pipeline``) is on."""
    return not turn.blocked and feature_enabled("recall")


def inspect_apply(turn: Turn, inspection: Inspection) -> str:
    """Hunter's verdict: the text to go on with and the flags."""
    turn.inspection = inspection
    turn.text = inspection.text
    for flag, on in (
        ("blocked", inspection.blocked),
        ("redacted", inspection.redacted),
        ("security_alert", inspection.flagged or inspection.blocked),
    ):
        if on:
            turn.flag(flag)
    return inspection.status


async def _record(name: str, turn: Turn, inspection: Inspection, budget: float) -> None:
    """The conversation check and the security events, in a stage thread. With no event
    to write, the check is left to the recall stage's thread when recall runs (no thread
    hop for it here); recall checks on its own if it fails before checking."""
    if not inspection.matches and (turn.new_conversation or turn.verified):
        return
    if not inspection.matches and recall_will_run(turn):
        turn.verify_pending = True
        return
    status, _ = await stage_run(
        f"{name}_record", inspect_record_run, turn, inspection, budget=max(budget, 0.5)
    )
    if status != "ok":
        logger.warning("security events of request %s not recorded: %s", turn.request_id, status)


def inspect_record_run(turn: Turn, inspection: Inspection, cancel: threading.Event) -> None:
    """Check the conversation is the owner's; one ``SecurityEvent`` per matching rule."""
    conversation_verify(turn)
    if not inspection.matches:
        return
    try:
        with write_serialized():
            security_events_record(
                inspection=inspection,
                request_id=turn.request_id,
                user_id=turn.owner.user_id,
                session_key=turn.owner.session_key,
                conversation_id=turn.conversation_id,
            )
    except Exception:
        # The verdict stands even when the event cannot be written.
        logger.exception("could not record security events")
