"""The immutable audit log: a keyed hash chain of ``AuditEntry`` rows.

Each entry's ``entry_hash`` is the HMAC-SHA256, with the audit key (``GRACE_AUDIT_KEY``;
by default a key derived from the secret key), of its sequence, time, actor, action,
resource, payload, request ID, key id and the previous entry's hash, so a changed, removed
or inserted row breaks the chain from that row on, and re-hashing the rows after it needs
the key (``audit_verify``, ``manage.py verify_audit_log``). UPDATE and DELETE are refused
by database triggers; whoever can drop them still cannot re-hash without the key, and
the chain's head is checkpointed outside the database (grace/audit_checkpoints.py), so
deleting the newest rows, or re-hashing with the key, is found too.

Rows written before the keyed chain hold a plain SHA-256 and an empty ``key_id``; grace
migration 0004 marked the transition with a keyed ``audit.keyed`` entry. A chain is
plain rows (possibly none) then keyed rows only, and at least one keyed row.

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
import hmac
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, connections, transaction
from django.utils import timezone

from grace.db import bulk_create_in_steps
from grace.models import AuditEntry
from grace.ops_conf import ops_settings

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
# pg_advisory_xact_lock key of the chain (any constant; "grace-au").
PG_LOCK_KEY = 0x6772616365_2D6175 & 0x7FFFFFFFFFFFFFFF
APPEND_ATTEMPTS = 5
KEYED = "hmac-sha256"
DERIVE_LABEL = b"grace.audit.chain-key.v1"
KEY_ID_LABEL = b"grace.audit.key-id.v1"


# --- Keys ---------------------------------------------------------------------------


def audit_key_derive(secret_key: str) -> str:
    """The audit key derived from a secret key (the default of ``GRACE_AUDIT_KEY``)."""
    return hmac.new(secret_key.encode(), DERIVE_LABEL, hashlib.sha256).hexdigest()


def audit_key_id(key: str) -> str:
    """A short public name of ``key`` (stored in each row); reveals nothing of the key."""
    return hmac.new(key.encode(), KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class AuditKeys:
    """The current audit key and the former ones, by key id."""

    current_id: str
    by_id: dict[str, bytes]
    derived: bool
    """The current key is derived from the secret key (``GRACE_AUDIT_KEY`` unset)."""

    @property
    def current(self) -> bytes:
        return self.by_id[self.current_id]


@lru_cache(maxsize=8)
def _keys(explicit: str, fallbacks: tuple[str, ...], secret_key: str) -> AuditKeys:
    current = explicit or audit_key_derive(secret_key)
    by_id = {audit_key_id(key): key.encode() for key in fallbacks}
    current_id = audit_key_id(current)
    by_id[current_id] = current.encode()
    return AuditKeys(current_id=current_id, by_id=by_id, derived=not explicit)


def audit_keys() -> AuditKeys:
    """The keys as configured now (``GRACE_AUDIT_KEY``, ``GRACE_AUDIT_KEY_FALLBACKS``)."""
    return _keys(
        ops_settings.AUDIT_KEY or "",
        tuple(ops_settings.AUDIT_KEY_FALLBACKS or ()),
        str(settings.SECRET_KEY),
    )


# --- Entries and their hashes ---------------------------------------------------------


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
    key: bytes | None = None,
    key_id: str = "",
) -> str:
    """HMAC-SHA256 (hex) with ``key`` of the entry's fields, ``key_id`` and the previous
    entry's hash; without a key, the plain SHA-256 of rows written before the keyed
    chain."""
    document: list[Any] = [
        sequence,
        created.astimezone(UTC).isoformat(timespec="microseconds"),
        actor,
        action,
        resource,
        payload,
        request_id,
        previous_hash,
    ]
    if key is None:
        data = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(data.encode()).hexdigest()
    document = [KEYED, key_id, *document]
    data = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.digest(key, data.encode(), "sha256").hex()


class UnknownAuditKey(KeyError):
    """An entry names a key id that is neither the current audit key nor a fallback."""


def entry_hash_compute(entry: AuditEntry, *, keys: AuditKeys | None = None) -> str:
    """The hash ``entry`` should have: keyed with the key its ``key_id`` names, or plain
    when it has none (rows written before the keyed chain)."""
    key = None
    if entry.key_id:
        key = (keys or audit_keys()).by_id.get(entry.key_id)
        if key is None:
            raise UnknownAuditKey(entry.key_id)
    return audit_hash(
        sequence=entry.sequence,
        created=entry.created,
        actor=entry.actor,
        action=entry.action,
        resource=entry.resource,
        payload=entry.payload,
        request_id=entry.request_id,
        previous_hash=entry.previous_hash,
        key=key,
        key_id=entry.key_id,
    )


def _resolve_request_id(value: str | Callable[[], str]) -> str:
    if callable(value):
        try:
            value = value() or ""
        except Exception:
            logger.warning("could not find the request ID of an audit entry", exc_info=True)
            value = ""
    return str(value)[:64]


# --- Appending ------------------------------------------------------------------------


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
    keys = audit_keys()
    for attempt in range(1, APPEND_ATTEMPTS + 1):
        try:
            return _append_once(drafts, using, keys)
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


def chain_lock(using: str) -> None:
    """Inside a transaction: hold the chain's lock until it ends (PostgreSQL; SQLite's
    write lock is the transaction's own)."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PG_LOCK_KEY])


def _append_once(
    drafts: list[tuple[AuditDraft, Any, str]], using: str, keys: AuditKeys
) -> list[AuditEntry]:
    with transaction.atomic(using=using):
        chain_lock(using)
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
                key_id=keys.current_id,
            )
            row.entry_hash = entry_hash_compute(row, keys=keys)
            previous = row.entry_hash
            rows.append(row)
        bulk_create_in_steps(AuditEntry.objects.using(using), rows)
    return rows


# --- Verifying ------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head as recorded outside the database (grace/audit_checkpoints.py)."""

    sequence: int
    entry_hash: str
    at: str = ""
    """When it was recorded (ISO 8601), for messages."""
    line: int = 0
    """Its line in the checkpoint file."""

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"the checkpoint of {self.at or 'an unknown time'}{where}"


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
    plain: int = 0
    """Entries written before the keyed chain (plain SHA-256)."""
    checkpoints: int = 0
    """Checkpoints the chain was compared with."""
    newest_checkpoint: int = 0
    """The sequence of the newest of them (0: none)."""
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


def _hash_problem(row: AuditEntry, keys: AuditKeys, first_keyed: int, first_current: int) -> str:
    if not row.key_id:
        if first_keyed:
            return (
                f"a plain SHA-256 entry after the chain became keyed at entry {first_keyed} "
                "(written or re-hashed without the audit key)"
            )
        if entry_hash_compute(row) != row.entry_hash:
            return "entry_hash does not match its fields (the row was changed)"
        return ""
    if row.key_id not in keys.by_id:
        return (
            f"signed with an unknown key (key id {row.key_id}; the current key's id is "
            f"{keys.current_id}): re-hashed with another key, or the audit key changed and "
            "the former one is not in GRACE_AUDIT_KEY_FALLBACKS"
        )
    if first_current and row.key_id != keys.current_id:
        return (
            f"signed with a former key (key id {row.key_id}) after entry {first_current} "
            "was signed with the current key"
        )
    if entry_hash_compute(row, keys=keys) != row.entry_hash:
        return (
            "entry_hash is not the HMAC of its fields with the audit key (the row was "
            "changed, or re-hashed without the key)"
        )
    return ""


def audit_verify(
    *,
    using: str = "default",
    batch: int = 2000,
    checkpoints: Iterable[Checkpoint] = (),
    keys: AuditKeys | None = None,
) -> ChainReport:
    """Walk the chain from sequence 1; stop at the first entry that breaks it.

    Broken: a gap, a link that does not match, a hash that is not the HMAC of the row's
    fields with the audit key (or, before the keyed chain, their SHA-256), a plain row
    after a keyed one, no keyed row at all; with ``checkpoints``: an entry whose hash
    differs from a checkpoint's, or a chain that ends before a checkpoint's entry.
    """
    keys = keys or audit_keys()
    anchors: dict[int, Checkpoint] = {}
    for checkpoint in checkpoints:
        other = anchors.get(checkpoint.sequence)
        if other is not None and other.entry_hash != checkpoint.entry_hash:
            return ChainReport(
                problem=ChainProblem(
                    checkpoint.sequence,
                    (
                        f"{other} and {checkpoint} record different hashes: the checkpoint file "
                        "was changed"
                    ),
                )
            )
        anchors.setdefault(checkpoint.sequence, checkpoint)
    report = ChainReport(checkpoints=len(anchors), newest_checkpoint=max(anchors, default=0))
    expected, previous = 1, GENESIS
    first_keyed = first_current = 0
    for row in _rows(using, batch):
        problem = ""
        if row.sequence != expected:
            missing = "is missing" if row.sequence > expected else "is duplicated"
            problem = f"sequence follows {expected - 1} (entry {expected} {missing})"
        elif row.previous_hash != previous:
            problem = (
                f"previous_hash {row.previous_hash[:12]}... does not match the hash of "
                f"entry {expected - 1} ({previous[:12]}...)"
            )
        else:
            problem = _hash_problem(row, keys, first_keyed, first_current)
        anchor = anchors.get(row.sequence)
        if not problem and anchor is not None and anchor.entry_hash != row.entry_hash:
            problem = (
                f"entry_hash {row.entry_hash[:12]}... differs from {anchor} "
                f"({anchor.entry_hash[:12]}...): this entry or one before it was changed and "
                "the chain re-hashed"
            )
        if problem:
            report.problem = ChainProblem(row.sequence, problem)
            return report
        if row.key_id:
            first_keyed = first_keyed or row.sequence
            if row.key_id == keys.current_id:
                first_current = first_current or row.sequence
        else:
            report.plain += 1
        report.checked += 1
        report.head_sequence, report.head_hash = row.sequence, row.entry_hash
        expected, previous = row.sequence + 1, row.entry_hash
    if report.checked and not first_keyed:
        report.problem = ChainProblem(
            report.head_sequence,
            (
                "no entry of the chain is keyed: it was re-hashed without the audit key (or "
                "grace migration 0004, which marks the keyed chain, has not run)"
            ),
        )
    elif report.newest_checkpoint > report.head_sequence:
        anchor = anchors[report.newest_checkpoint]
        report.problem = ChainProblem(
            report.head_sequence + 1,
            (
                f"missing: the chain ends at entry {report.head_sequence}, but {anchor} "
                f"records entry {anchor.sequence}: the newest entries were deleted"
            ),
        )
    return report
