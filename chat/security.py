"""Hunter: the security rules run over every message by the inspect stage.

Rules are ``SecurityRule`` rows. Their compiled patterns are cached per process (reset
when a rule is saved or deleted here, and at least every ``GRACE_HUNTER_CACHE_SECONDS``
for changes made by other processes). Matching uses the ``regex`` package with a
timeout per rule, so a pathological pattern can never hang a request: a rule that runs
out of time is skipped and reported (``incomplete``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import regex

from chat.conf import chat_settings
from chat.models import SecurityEvent, SecurityRule
from chat.patterns import pattern_compile
from chat.signals import security_events_recorded, signal_send

logger = logging.getLogger(__name__)

EXCERPT_LENGTH = 120
REDACTION = "[REDACTED:{kind}]"


@dataclass(frozen=True)
class CompiledRule:
    id: int
    name: str
    kind: str
    severity: str
    action: str
    regex: Any


@dataclass
class RuleMatch:
    rule: CompiledRule
    spans: list[tuple[int, int]]
    excerpt: str


@dataclass
class Inspection:
    """What Hunter found in one message."""

    text: str
    """The message after redaction (the original when nothing was redacted)."""
    matches: list[RuleMatch] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    """Names of rules that ran out of time."""

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


class _RuleCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[CompiledRule] | None = None
        self._loaded = 0.0

    def get(self) -> list[CompiledRule]:
        rules, loaded = self._rules, self._loaded
        if rules is not None and time.monotonic() - loaded < chat_settings.HUNTER_CACHE_SECONDS:
            return rules
        with self._lock:
            if self._rules is rules:
                self._rules = self._load()
                self._loaded = time.monotonic()
            return self._rules or []

    def clear(self) -> None:
        with self._lock:
            self._rules = None

    @staticmethod
    def _load() -> list[CompiledRule]:
        compiled = []
        for rule in SecurityRule.objects.filter(enabled=True).order_by("id"):
            try:
                pattern = pattern_compile(rule.pattern, case_sensitive=rule.case_sensitive)
            except (regex.error, ValueError, OverflowError) as exc:
                logger.error("security rule %s has an invalid pattern: %s", rule.name, exc)
                continue
            compiled.append(
                CompiledRule(rule.pk, rule.name, rule.kind, rule.severity, rule.action, pattern)
            )
        return compiled


rule_cache = _RuleCache()


def _excerpt(text: str, start: int, end: int, *, secret: bool) -> str:
    if secret:
        return f"[{end - start} characters redacted]"
    snippet = text[start:end]
    if len(snippet) > EXCERPT_LENGTH:
        snippet = snippet[: EXCERPT_LENGTH - 1] + "…"
    return snippet


def hunter_inspect(*, text: str, rules: list[CompiledRule] | None = None) -> Inspection:
    """Run every enabled rule over ``text`` (each bounded in time); redact matches of
    ``redact`` rules. Loads rules from the cache (a database read when it is stale)."""
    timeout = chat_settings.HUNTER_MATCH_TIMEOUT
    inspection = Inspection(text=text)
    redact_spans: list[tuple[int, int, str]] = []
    for rule in rules if rules is not None else rule_cache.get():
        try:
            spans = [m.span() for m in rule.regex.finditer(text, timeout=timeout)]
        except TimeoutError:
            logger.warning("security rule %s ran out of time and was skipped", rule.name)
            inspection.incomplete.append(rule.name)
            continue
        spans = [(start, end) for start, end in spans if end > start]
        if not spans:
            continue
        first = spans[0]
        secret = rule.action == "redact"
        inspection.matches.append(
            RuleMatch(rule, spans, _excerpt(text, first[0], first[1], secret=secret))
        )
        if secret:
            redact_spans += [(start, end, rule.kind) for start, end in spans]
    if redact_spans:
        inspection.text = _redact(text, redact_spans)
    return inspection


def _redact(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace the (possibly overlapping) spans with markers, left to right."""
    merged: list[list[Any]] = []
    for start, end, kind in sorted(spans):
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
