"""The immutable audit log: a hash chain of ``AuditEntry`` rows.

Each entry's ``entry_hash`` is the SHA-256 of its sequence, time, actor, action,
resource, payload, request ID and the previous entry's hash, so a changed, removed or
inserted row breaks the chain from that row on (``audit_verify``, ``manage.py
verify_audit_log``). UPDATE and DELETE are refused by database triggers.

Appends from many threads and processes keep one chain: the head is read and the new
rows written in one transaction that holds the chain's lock (SQLite: ``BEGIN IMMEDIATE``,
the database's write lock, see ``transaction_mode`` in grace/settings.py; PostgreSQL: a
transaction-scoped advisory lock), and ``sequence`` is the primary key, so two writers
can never both add sequence N. Elsewhere a collision raises and the append is retried.

Payloads hold ids and facts, never message contents. ``safe_log`` (grace/audit_writer.py)
is what application code calls: it never raises and never holds up its caller.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, OperationalError, connections, transaction
from django.utils import timezone

from grace.db import bulk_create_in_steps
from grace.models import AuditEntry

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
# pg_advisory_xact_lock key of the chain (any constant; "grace-au").
PG_LOCK_KEY = 0x6772616365_2D6175 & 0x7FFFFFFFFFFFFFFF
APPEND_ATTEMPTS = 5


@dataclass(frozen=True)
class AuditDraft:
    """An entry before it has a place in the chain."""

    action: str
    """What happened, dotted: ``chat.exchange``, ``task.finished``, ``admin.change``..."""
    actor: str = "system"
    """Who: ``user:<pk>``, ``anonymous:<hash of the session>``, ``system``."""
    resource: str = ""
    """What it happened to: ``<app>.<model>:<id>``."""
    payload: dict[str, Any] = field(default_factory=dict)
    request_id: str | Callable[[], str] = ""
    """The request ID, or a function that finds it (called by the writer, off the caller's
    path)."""


def json_canonical(value: Any) -> Any:
    """``value`` as the database will give it back: JSON types only, string keys, floats
    as text (JSON engines do not agree on how to print them), no NUL characters."""
    if isinstance(value, dict):
        return {str(k).replace("\x00", ""): json_canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [json_canonical(v) for v in items]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value).replace("\x00", "")


def audit_hash(
    *,
    sequence: int,
    created: datetime,
    actor: str,
    action: str,
    resource: str,
    payload: Any,
    request_id: str,
    previous_hash: str,
) -> str:
    """SHA-256 (hex) of the entry's fields and the previous entry's hash."""
    document = [
        sequence,
        created.astimezone(UTC).isoformat(timespec="microseconds"),
        actor,
        action,
        resource,
        payload,
        request_id,
        previous_hash,
    ]
    data = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def entry_hash_compute(entry: AuditEntry) -> str:
    return audit_hash(
        sequence=entry.sequence,
        created=entry.created,
        actor=entry.actor,
        action=entry.action,
        resource=entry.resource,
        payload=entry.payload,
        request_id=entry.request_id,
        previous_hash=entry.previous_hash,
    )


def _resolve_request_id(value: str | Callable[[], str]) -> str:
    if callable(value):
        try:
            value = value() or ""
        except Exception:
            logger.warning("could not find the request ID of an audit entry", exc_info=True)
            value = ""
    return str(value)[:64]


def audit_append(*, entries: Sequence[AuditDraft], using: str = "default") -> list[AuditEntry]:
    """Append ``entries`` (in order) at the head of the chain; return the stored rows.

    Raises when the database does; a lost race for the head is retried.
    """
    drafts = [
        (
            draft,
            json_canonical(draft.payload or {}),
            _resolve_request_id(draft.request_id),
        )
        for draft in entries
    ]
    if not drafts:
        return []
    for attempt in range(1, APPEND_ATTEMPTS + 1):
        try:
            return _append_once(drafts, using)
        except (IntegrityError, OperationalError) as exc:
            if attempt == APPEND_ATTEMPTS or not _retryable(exc):
                raise
            logger.info("audit append lost a race (%s); retrying", exc)
            time.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        return True  # another writer took the sequence first
    return "locked" in str(exc) or "busy" in str(exc)


def _append_once(
    drafts: list[tuple[AuditDraft, Any, str]], using: str
) -> list[AuditEntry]:
    connection = connections[using]
    with transaction.atomic(using=using):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PG_LOCK_KEY])
        head = (
            AuditEntry.objects.using(using)
            .order_by("-sequence")
            .values_list("sequence", "entry_hash")
            .first()
        )
        sequence, previous = head if head is not None else (0, GENESIS)
        created = timezone.now()
        rows = []
        for draft, payload, request_id in drafts:
            sequence += 1
            row = AuditEntry(
                sequence=sequence,
                created=created,
                actor=draft.actor[:150],
                action=draft.action[:64],
                resource=draft.resource[:255],
                payload=payload,
                request_id=request_id,
                previous_hash=previous,
            )
            row.entry_hash = entry_hash_compute(row)
            previous = row.entry_hash
            rows.append(row)
        bulk_create_in_steps(AuditEntry.objects.using(using), rows)
    return rows


@dataclass(frozen=True)
class ChainProblem:
    sequence: int
    reason: str

    def __str__(self) -> str:
        return f"audit entry {self.sequence}: {self.reason}"


@dataclass
class ChainReport:
    checked: int = 0
    head_sequence: int = 0
    head_hash: str = GENESIS
    problem: ChainProblem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _rows(using: str, batch: int) -> Iterator[AuditEntry]:
    """Every row in sequence order, read in keyset pages (no long-lived cursor)."""
    after = None
    while True:
        rows = AuditEntry.objects.using(using).order_by("sequence")
        if after is not None:
            rows = rows.filter(sequence__gt=after)
        page = list(rows[:batch])
        if not page:
            return
        yield from page
        after = page[-1].sequence


def audit_verify(*, using: str = "default", batch: int = 2000) -> ChainReport:
    """Walk the chain from sequence 1; stop at the first entry that breaks it."""
    report = ChainReport()
    expected, previous = 1, GENESIS
    for row in _rows(using, batch):
        problem = None
        if row.sequence != expected:
            missing = "is missing" if row.sequence > expected else "is duplicated"
            problem = f"sequence follows {expected - 1} (entry {expected} {missing})"
        elif row.previous_hash != previous:
            problem = (
                f"previous_hash {row.previous_hash[:12]}... does not match the hash of "
                f"entry {expected - 1} ({previous[:12]}...)"
            )
        elif entry_hash_compute(row) != row.entry_hash:
            problem = "entry_hash does not match its fields (the row was changed)"
        if problem is not None:
            report.problem = ChainProblem(row.sequence, problem)
            return report
        report.checked += 1
        report.head_sequence, report.head_hash = row.sequence, row.entry_hash
        expected, previous = row.sequence + 1, row.entry_hash
    return report
