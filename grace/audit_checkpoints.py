"""Checkpoints of the audit chain's head, kept outside the database.

A checkpoint records an entry's sequence and hash; ``verify_audit_log`` fails when the
chain no longer holds that entry (the newest rows were deleted) or holds it with another
hash (a row was changed and every later one re-hashed, even with the key). Each is one
JSON line appended to ``GRACE_AUDIT_CHECKPOINT_PATH`` and one JSON log line (logger
``grace.audit``, field ``audit_checkpoint``), so shipping the logs off the host anchors
the chain a second time.

The audit writer checkpoints the head it wrote at most every
``GRACE_AUDIT_CHECKPOINT_SECONDS`` (and at exit); ``manage.py audit_checkpoint``
checkpoints the database's head on demand.

The file is only ever appended to: a whole line in one ``write`` under an exclusive
``flock``, then ``fsync``. A write cut short by a crash leaves a partial last line; the
next append starts a new line after it, and readers skip it, so every earlier line stays
valid.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from grace.audit import Checkpoint, UnknownAuditKey, audit_keys, entry_hash_compute
from grace.models import AuditEntry
from grace.ops_conf import ops_settings

logger = logging.getLogger("grace.audit")

SUFFIX = ".audit-checkpoints.jsonl"
_HASH = re.compile(r"[0-9a-f]{64}")


class CheckpointRefused(Exception):
    """The head of the chain is not one to anchor (its hash is not the audit key's)."""


def checkpoint_path(using: str = "default") -> Path | None:
    """The checkpoint file, or None when there is none (``off``, or the default on an
    engine other than SQLite)."""
    value = (ops_settings.AUDIT_CHECKPOINT_PATH or "").strip()
    if value.lower() == "off":
        return None
    if value:
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(settings.BASE_DIR) / path
    connection = connections[using]
    name = str(connection.settings_dict.get("NAME") or "")
    if connection.vendor != "sqlite" or not name or name.startswith("file:") or ":memory:" in name:
        return None
    database = Path(name)
    return database.with_name(database.stem + SUFFIX)


def checkpoint_line_append(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path``, durably (``fsync``)."""
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one writer at a time, across processes
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # the last write was cut short: start a line of our own
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    if created:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new file's name survives a crash too
        finally:
            os.close(directory)


@dataclass
class CheckpointFile:
    path: Path
    checkpoints: list[Checkpoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Lines that were skipped (cut short by a crash, or not checkpoints)."""


def checkpoints_read(path: Path) -> CheckpointFile:
    """Every checkpoint in ``path`` (``FileNotFoundError`` when it does not exist)."""
    result = CheckpointFile(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                sequence, entry_hash = int(record["sequence"]), str(record["entry_hash"])
                if sequence < 1 or not _HASH.fullmatch(entry_hash):
                    raise ValueError(sequence)
            except (ValueError, KeyError, TypeError):
                result.notes.append(f"line {number} is not a checkpoint (cut short?): skipped")
                continue
            at = str(record.get("at") or "")
            result.checkpoints.append(Checkpoint(sequence, entry_hash, at=at, line=number))
    return result


def checkpoint_record(
    *,
    sequence: int,
    entry_hash: str,
    created: datetime,
    key_id: str,
    source: str,
    using: str = "default",
) -> tuple[dict[str, Any], Path | None]:
    """Record the head ``sequence``/``entry_hash``: a line in the checkpoint file (when
    there is one) and a JSON log line. Raises when the file cannot be written (after the
    log line)."""
    record = {
        "sequence": sequence,
        "entry_hash": entry_hash,
        "entry_created": created.isoformat(timespec="microseconds"),
        "key_id": key_id,
        "at": timezone.now().isoformat(timespec="microseconds"),
        "source": source,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    path = checkpoint_path(using)
    logger.info(
        "audit checkpoint: entry %s, hash %s",
        sequence,
        entry_hash,
        extra={"audit_checkpoint": {**record, "path": str(path or "")}},
    )
    if path is not None:
        checkpoint_line_append(path, record)
    return record, path


def audit_checkpoint(
    *, using: str = "default", source: str = "command"
) -> tuple[dict[str, Any], Path | None] | None:
    """Checkpoint the database's head now; None when the chain is empty.

    ``CheckpointRefused`` when the head's hash is not what the audit key gives (a row
    forged without the key is never anchored).
    """
    head = AuditEntry.objects.using(using).order_by("-sequence").first()
    if head is None:
        return None
    try:
        good = bool(head.key_id) and entry_hash_compute(head, keys=audit_keys()) == head.entry_hash
    except UnknownAuditKey:
        good = False
    if not good:
        raise CheckpointRefused(
            f"audit entry {head.sequence} (the head) is not signed with the audit key: "
            "not checkpointed; run verify_audit_log"
        )
    return checkpoint_record(
        sequence=head.sequence,
        entry_hash=head.entry_hash,
        created=head.created,
        key_id=head.key_id,
        source=source,
        using=using,
    )
