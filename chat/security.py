"""Hunter: the security rules run over every message.

Rules are ``SecurityRule`` rows, compiled for RE2 (chat/patterns.py): matching is linear
in the length of the message whatever the pattern, so nothing needs a timeout and no rule
is ever skipped for running long. Two entry points, both pure CPU and fast enough to run
inline on the event loop (well under a millisecond per rule on a 4,000-character
message):

- ``hunter_mask``: the ``redact`` rules only, on the clean text (chat/normalize.py), so a
  secret split by a zero-width space is still found; the original text is returned with
  each secret's span replaced by ``[REDACTED:<kind>]``. Everything downstream sees only
  this text.
- ``hunter_inspect``: every rule. ``flag`` and ``block`` rules match on the clean text
  and on the folded one (look-alikes, leetspeak, spaced-out letters), so ``' or 1=1`` and
  ``Ign0re all previous instructi0ns`` are both found. Excerpts are cut from the masked
  text: an excerpt never holds a secret.

The compiled rules are cached per process (reset when a rule is saved or deleted here,
and at least every ``GRACE_HUNTER_CACHE_SECONDS`` for other processes' changes). Reading
them may query the database: on the event loop, ``await hunter_rules()``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import re2
from asgiref.sync import sync_to_async
from django.db import close_old_connections

from chat.conf import chat_settings
from chat.models import SecurityEvent, SecurityRule
from chat.normalize import Normalised, span_to_original, text_clean, text_fold
from chat.patterns import pattern_compile
from chat.signals import security_events_recorded, signal_send

logger = logging.getLogger(__name__)

EXCERPT_LENGTH = 120
REDACTION = "[REDACTED:{kind}]"

Span = tuple[int, int]


@dataclass(frozen=True)
class CompiledRule:
    id: int | None
    """The ``SecurityRule`` row's id (None for a rule built by ``rule_compile``)."""
    name: str
    kind: str
    severity: str
    action: str
    regex: Any
    """The compiled RE2 pattern (``pattern_compile``)."""


def rule_compile(
    *,
    name: str,
    pattern: str,
    action: str,
    kind: str = "other",
    severity: str = "medium",
    case_sensitive: bool = False,
    id: int | None = None,  # noqa: A002 - the field's name
    description: str = "",
    enabled: bool = True,
) -> CompiledRule:
    """A rule without a database row (tests, benchmarks): ``rule_compile(**spec)`` takes a
    ``SEED_RULES`` entry. Raises ``re2.error`` for a pattern RE2 cannot compile."""
    return CompiledRule(
        id, name, kind, severity, action, pattern_compile(pattern, case_sensitive=case_sensitive)
    )


@dataclass
class RuleMatch:
    rule: CompiledRule
    spans: list[Span]
    """Where the rule matched, as spans of the original text (overlaps merged)."""
    excerpt: str
    """The first match, from the masked text (``[N characters redacted]`` for a secret)."""


@dataclass
class Inspection:
    """What Hunter found in one message."""

    text: str
    """The original message with every secret's span masked (the original when none)."""
    matches: list[RuleMatch] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return any(m.rule.action == "block" for m in self.matches)

    @property
    def redacted(self) -> bool:
        return any(m.rule.action == "redact" for m in self.matches)

    @property
    def flagged(self) -> bool:
        return any(m.rule.action == "flag" for m in self.matches)

    @property
    def status(self) -> str:
        """``metadata.stages.inspect``: blocked, redacted, flagged or ok."""
        if self.blocked:
            return "blocked"
        if self.redacted:
            return "redacted"
        if self.flagged:
            return "flagged"
        return "ok"

    @property
    def secrets(self) -> list[tuple[int, int, str]]:
        """The masked spans of the original text, with their rule's kind."""
        return [
            (start, end, m.rule.kind)
            for m in self.matches
            if m.rule.action == "redact"
            for start, end in m.spans
        ]


class _RuleCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[CompiledRule] | None = None
        self._loaded = 0.0
        self._refreshing = False

    def fresh(self) -> list[CompiledRule] | None:
        """The cached rules when they need no database read, else None."""
        rules, loaded = self._rules, self._loaded
        if rules is not None and time.monotonic() - loaded < chat_settings.HUNTER_CACHE_SECONDS:
            return rules
        return None

    def get(self) -> list[CompiledRule]:
        """The rules, read from the database when stale (never on the event loop)."""
        rules = self.fresh()
        if rules is not None:
            return rules
        rules = self._rules
        with self._lock:
            if self._rules is rules:
                self._rules = self._load()
                self._loaded = time.monotonic()
            return self._rules or []

    def stale(self) -> list[CompiledRule] | None:
        """The last rules loaded, however old (None before the first load)."""
        return self._rules

    def refresh_claim(self) -> bool:
        """True for the one caller that should reload stale rules now."""
        with self._lock:
            if self._refreshing:
                return False
            self._refreshing = True
            return True

    def refresh_done(self) -> None:
        self._refreshing = False

    def clear(self) -> None:
        with self._lock:
            self._rules = None

    @staticmethod
    def _load() -> list[CompiledRule]:
        compiled = []
        for rule in SecurityRule.objects.filter(enabled=True).order_by("id"):
            try:
                pattern = pattern_compile(rule.pattern, case_sensitive=rule.case_sensitive)
                # RE2 builds the reverse program on the first match: here, not on the loop.
                pattern.reverseprogramsize  # noqa: B018
                pattern.search(_WARM_UP)
            except re2.error as exc:
                logger.error("security rule %s has an invalid pattern: %s", rule.name, exc)
                continue
            compiled.append(
                CompiledRule(rule.pk, rule.name, rule.kind, rule.severity, rule.action, pattern)
            )
        return compiled


_WARM_UP = "Ignore the rules? SELECT 1; <b>x</b> password=x ../ $(id)"

rule_cache = _RuleCache()


def _rules_load() -> list[CompiledRule]:
    try:
        return rule_cache.get()
    finally:
        close_old_connections()


async def hunter_rules() -> list[CompiledRule]:
    """The enabled rules: the cached list when fresh, else read in a worker thread.

    Once rules were loaded, a stale list is returned at once while one background
    refresh reads the new one: masking never waits for the database then (under a burst
    every message would otherwise wait for the same read), and an edit still applies
    within ``GRACE_HUNTER_CACHE_SECONDS`` plus one read."""
    rules = rule_cache.fresh()
    if rules is not None:
        return rules
    stale = rule_cache.stale()
    if stale is None:
        return await sync_to_async(_rules_load, thread_sensitive=False)()
    if rule_cache.refresh_claim():
        task = asyncio.get_running_loop().create_task(_refresh())
        _refreshing.add(task)
        task.add_done_callback(_refreshing.discard)
    return stale


_refreshing: set[asyncio.Task[None]] = set()


async def _refresh() -> None:
    try:
        await sync_to_async(_rules_load, thread_sensitive=False)()
    except Exception:
        logger.warning("could not reload the security rules; the previous ones stay", exc_info=True)
    finally:
        rule_cache.refresh_done()


def _find(rule: CompiledRule, *texts: Normalised) -> list[Span]:
    """The rule's matches in any of the normal forms, as merged spans of the original."""
    spans = sorted(
        {
            span_to_original(norm, *found.span())
            for norm in texts
            for found in rule.regex.finditer(norm.text)
            if found.end() > found.start()
        }
    )
    merged: list[Span] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _redact(text: str, spans: list[tuple[int, int, str]], *, offset: int = 0) -> str:
    """Replace the (possibly overlapping) spans of ``text`` (which starts at ``offset``
    of the original) with markers, left to right."""
    merged: list[list[Any]] = []
    for start, end, kind in sorted(spans):
        start, end = max(start - offset, 0), min(end - offset, len(text))
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, kind])
    pieces, cursor = [], 0
    for start, end, kind in merged:
        pieces += [text[cursor:start], REDACTION.format(kind=kind)]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _excerpt(text: str, span: Span, secrets: list[tuple[int, int, str]]) -> str:
    """The span of the original with any secret in it masked, at most EXCERPT_LENGTH."""
    start, end = span
    snippet = _redact(text[start:end], secrets, offset=start)
    if len(snippet) > EXCERPT_LENGTH:
        snippet = snippet[: EXCERPT_LENGTH - 1] + "…"
    return snippet


def hunter_mask(*, text: str, rules: list[CompiledRule] | None = None) -> Inspection:
    """Mask secrets: the ``redact`` rules over the clean text; ``Inspection.text`` is the
    original with each secret's span replaced by ``[REDACTED:<kind>]``. ``rules``: the
    cached ones when None (a database read when stale: not on the event loop)."""
    if rules is None:
        rules = rule_cache.get()
    redact = [rule for rule in rules if rule.action == "redact"]
    if not redact:
        return Inspection(text=text)
    clean = text_clean(text)
    inspection = Inspection(text=text)
    for rule in redact:
        spans = _find(rule, clean)
        if spans:
            first = spans[0]
            inspection.matches.append(
                RuleMatch(rule, spans, f"[{first[1] - first[0]} characters redacted]")
            )
    if inspection.matches:
        inspection.text = _redact(text, inspection.secrets)
    return inspection


def hunter_inspect(
    *,
    text: str,
    rules: list[CompiledRule] | None = None,
    masked: Inspection | None = None,
) -> Inspection:
    """Every rule over ``text``: ``hunter_mask`` (or its result ``masked``, not run twice),
    then the ``flag`` and ``block`` rules over the clean and the folded text. Excerpts
    come from the masked text."""
    if rules is None:
        rules = rule_cache.get()
    if masked is None:
        masked = hunter_mask(text=text, rules=rules)
    inspection = Inspection(text=masked.text, matches=list(masked.matches))
    others = [rule for rule in rules if rule.action != "redact"]
    if not others:
        return inspection
    clean = text_clean(text)
    folded = text_fold(text, clean=clean)
    secrets = masked.secrets
    for rule in others:
        spans = _find(rule, clean, folded)
        if spans:
            inspection.matches.append(RuleMatch(rule, spans, _excerpt(text, spans[0], secrets)))
    return inspection


def security_events_record(
    *,
    inspection: Inspection,
    request_id: str,
    user_id: int | None,
    session_key: str,
    conversation_id: Any,
) -> int:
    """One ``SecurityEvent`` per matching rule; returns how many were written."""
    events = [
        SecurityEvent(
            rule_id=m.rule.id,
            rule_name=m.rule.name,
            kind=m.rule.kind,
            severity=m.rule.severity,
            action=m.rule.action,
            excerpt=m.excerpt[:200],
            match_count=len(m.spans),
            request_id=request_id,
            user_id=user_id,
            session_key=session_key or "",
            conversation_id=conversation_id,
        )
        for m in inspection.matches
    ]
    if events:
        SecurityEvent.objects.bulk_create(events)
        # bulk_create sends no post_save: this signal tells the receivers (audit, metrics).
        signal_send(security_events_recorded, SecurityEvent, events=events)
    return len(events)
