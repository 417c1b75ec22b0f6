"""The anchored audit chain (issue 14, finding 6), on the test run's engine.

With the triggers dropped, as a database administrator can, deleting the newest entries,
or changing one and re-hashing every later one, used to verify as intact. Now the chain is
keyed (HMAC-SHA256 with the audit key) and its head is checkpointed outside the database,
and ``verify_audit_log`` names the entry where either breaks.

The audit table is never flushed between tests; each test here appends its own entries at
the head and, with the triggers dropped, puts the chain back as it found it.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.db import connection

from grace.audit import (
    GENESIS,
    AuditDraft,
    audit_append,
    audit_hash,
    audit_key_derive,
    audit_key_id,
    audit_verify,
    entry_hash_compute,
)
from grace.audit_checkpoints import audit_checkpoint, checkpoint_path, checkpoints_read
from grace.audit_writer import safe_log
from grace.models import AuditEntry
from tests.timing import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

triggers = importlib.import_module("grace.migrations.0002_auditentry")
keyed_migration = importlib.import_module("grace.migrations.0004_auditentry_key_id")

WRONG_KEY = "not-the-audit-key-" + "x" * 32


@pytest.fixture
def checkpoint_file(settings: Any, tmp_path: Path) -> Path:
    """The checkpoint file of this test (GRACE_AUDIT_CHECKPOINT_PATH)."""
    path = tmp_path / "audit-checkpoints.jsonl"
    settings.GRACE = {**settings.GRACE, "AUDIT_CHECKPOINT_PATH": str(path)}
    return path


def _head() -> int:
    return AuditEntry.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


@pytest.fixture
def dba() -> Iterator[None]:
    """Drop the triggers, as a database administrator can; afterwards put back the rows
    there were and the triggers."""
    create, drop = triggers.triggers_sql(connection.vendor)
    with connection.cursor() as cursor:
        for statement in drop:
            cursor.execute(statement)
    before = list(AuditEntry.objects.order_by("sequence"))
    try:
        yield
    finally:
        AuditEntry.objects.all().delete()
        AuditEntry.objects.bulk_create(before, batch_size=200)
        with connection.cursor() as cursor:
            for statement in create:
                cursor.execute(statement)


def _append(n: int, action: str = "test.anchor") -> list[AuditEntry]:
    return audit_append(entries=[AuditDraft(action=action, payload={"n": i}) for i in range(n)])


def _verify() -> str:
    out = io.StringIO()
    call_command("verify_audit_log", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _verify_fails() -> str:
    with pytest.raises(CommandError) as failed:
        _verify()
    return str(failed.value)


def _rehash_from(rows: list[AuditEntry], *, key: str | None, key_id: str) -> None:
    """Re-hash ``rows`` (the chain's newest) in order, each linked to the one before, as
    someone who changed the first would: ``key`` None for the plain SHA-256."""
    previous = AuditEntry.objects.get(sequence=rows[0].sequence - 1).entry_hash
    for row in rows:
        row.previous_hash, row.key_id = previous, key_id
        row.entry_hash = audit_hash(
            sequence=row.sequence,
            created=row.created,
            actor=row.actor,
            action=row.action,
            resource=row.resource,
            payload=row.payload,
            request_id=row.request_id,
            previous_hash=previous,
            key=None if key is None else key.encode(),
            key_id=key_id,
        )
        AuditEntry.objects.filter(sequence=row.sequence).update(
            actor=row.actor,
            previous_hash=row.previous_hash,
            key_id=key_id,
            entry_hash=row.entry_hash,
        )
        previous = row.entry_hash


def test_deleting_the_newest_entries_fails_against_the_checkpoint(dba, checkpoint_file):
    rows = _append(5)
    call_command("audit_checkpoint", stdout=io.StringIO())
    AuditEntry.objects.filter(sequence__gte=rows[3].sequence).delete()

    assert audit_verify().ok  # the chain alone still looks intact: the finding
    message = _verify_fails()
    assert message.startswith(
        f"audit entry {rows[3].sequence}: missing: the chain ends at entry {rows[2].sequence}"
    )
    assert f"records entry {rows[4].sequence}: the newest entries were deleted" in message
    assert f"(line 1) records entry {rows[4].sequence}" in message


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("plain", "a plain SHA-256 entry after the chain became keyed"),
        ("wrong key", "entry_hash is not the HMAC of its fields with the audit key"),
        ("own key", "signed with an unknown key"),
    ],
)
def test_an_entry_changed_and_every_later_one_rehashed_without_the_key_fails(
    dba, checkpoint_file, how, expected
):
    rows = _append(4)
    victim = rows[1]
    victim.actor = "mallory"
    if how == "plain":
        _rehash_from(rows[1:], key=None, key_id="")
    elif how == "wrong key":  # the real key's id, a guessed key
        _rehash_from(rows[1:], key=WRONG_KEY, key_id=victim.key_id)
    else:
        _rehash_from(rows[1:], key=WRONG_KEY, key_id=audit_key_id(WRONG_KEY))

    message = _verify_fails()  # no checkpoint needed: the key alone finds it
    assert message.startswith(f"audit entry {victim.sequence}: {expected}")


def test_an_entry_rehashed_with_the_key_diverges_from_the_checkpoint(
    dba, checkpoint_file, settings
):
    """Someone with the key too: the checkpoint outside the database still differs."""
    rows = _append(4)
    call_command("audit_checkpoint", stdout=io.StringIO())
    rows[1].actor = "mallory"
    key = audit_key_derive(str(settings.SECRET_KEY))  # the default key: derived
    _rehash_from(rows[1:], key=key, key_id=rows[1].key_id)

    assert audit_verify().ok  # consistent with the key...
    message = _verify_fails()  # ...but not with the checkpoint of the old head
    assert message.startswith(f"audit entry {rows[3].sequence}: entry_hash ")
    assert "differs from the checkpoint of" in message
    assert "this entry or one before it was changed and the chain re-hashed" in message


def test_a_legitimate_chain_with_checkpoints_verifies(checkpoint_file):
    _append(3)
    first = audit_checkpoint()
    _append(2)
    second = audit_checkpoint()
    assert first is not None and second is not None
    out = _verify()
    assert f"Audit log intact: {second[0]['sequence']} entries" in out
    assert f"holds all 2 checkpoints of {checkpoint_file} (newest: entry " in out
    assert f"head sequence {second[0]['sequence']}, hash {second[0]['entry_hash']}" in out


def test_the_writer_checkpoints_the_head_it_wrote_every_interval(ops_chat, checkpoint_file):
    ops_chat.GRACE = {**ops_chat.GRACE, "AUDIT_CHECKPOINT_SECONDS": 1.0}
    sequences = []
    for n in range(2):
        resource = f"test:writer-checkpoint-{n}"
        assert safe_log(action="test.checkpoint", resource=resource, wait=True)
        entry = AuditEntry.objects.get(resource=resource)
        sequences.append(entry.sequence)

        def anchored(entry: AuditEntry = entry) -> bool:
            return checkpoint_file.exists() and any(
                (c.sequence, c.entry_hash) == (entry.sequence, entry.entry_hash)
                for c in checkpoints_read(checkpoint_file).checkpoints
            )

        wait_until(anchored, timeout=10, message=f"a checkpoint of entry {entry.sequence}")
    lines = [json.loads(line) for line in checkpoint_file.read_text().splitlines()]
    assert {line["source"] for line in lines} == {"writer"}
    assert "Audit log intact" in _verify()


def _transition_apply() -> None:
    with connection.schema_editor() as editor:
        keyed_migration.mark_transition(apps, editor)


def test_entries_from_before_the_keyed_chain_verify_up_to_the_transition(dba, checkpoint_file):
    """A log written before the change (plain SHA-256 rows): the migration appends a keyed
    ``audit.keyed`` entry chained from the last plain one; the chain verifies. A plain row
    forged after it, or the whole chain re-hashed plain, does not."""
    AuditEntry.objects.all().delete()
    previous = GENESIS
    plain = []
    for sequence in (1, 2, 3):
        row = AuditEntry(
            sequence=sequence,
            created=AuditEntry._meta.get_field("created").to_python(
                "2026-01-02T03:04:05.123456+00:00"
            ),
            actor="system",
            action="test.plain",
            payload={"n": sequence},
            previous_hash=previous,
            key_id="",
        )
        row.entry_hash = entry_hash_compute(row)
        assert (
            row.entry_hash
            == hashlib.sha256(
                json.dumps(
                    [
                        sequence,
                        "2026-01-02T03:04:05.123456+00:00",
                        "system",
                        "test.plain",
                        "",
                        {"n": sequence},
                        "",
                        previous,
                    ],
                    separators=(",", ":"),
                ).encode()
            ).hexdigest()
        )
        row.save(force_insert=True)
        previous = row.entry_hash
        plain.append(row)
    assert not audit_verify().ok  # plain rows only: re-hashed without the key, or unmarked

    _transition_apply()
    _transition_apply()  # once only
    mark = AuditEntry.objects.get(sequence=4)
    assert (mark.action, mark.previous_hash, mark.payload) == (
        "audit.keyed",
        plain[-1].entry_hash,
        {"scheme": "hmac-sha256", "plain_entries": 3},
    )
    _append(2)
    call_command("audit_checkpoint", stdout=io.StringIO())
    out = _verify()
    assert "Audit log intact: 6 entries (3 plain entries from before the keyed chain)" in out

    forged = AuditEntry(
        sequence=7,
        created=mark.created,
        actor="mallory",
        action="test.forged",
        previous_hash=AuditEntry.objects.get(sequence=6).entry_hash,
        key_id="",
    )
    forged.entry_hash = entry_hash_compute(forged)
    forged.save(force_insert=True)
    assert _verify_fails().startswith(
        "audit entry 7: a plain SHA-256 entry after the chain became keyed at entry 4"
    )

    # Everything from the transition on replaced by plain rows: no keyed entry is left.
    AuditEntry.objects.filter(sequence__gte=4).delete()
    problem = audit_verify().problem
    assert problem is not None and problem.reason.startswith("no entry of the chain is keyed")


def test_a_former_key_in_the_fallbacks_keeps_its_entries_verifiable(dba, checkpoint_file, settings):
    old_rows = _append(2)
    old_key = audit_key_derive(str(settings.SECRET_KEY))
    settings.GRACE = {**settings.GRACE, "AUDIT_KEY": WRONG_KEY}  # the key changes
    new_rows = _append(2)
    assert new_rows[0].key_id == audit_key_id(WRONG_KEY) != old_rows[0].key_id
    assert _verify_fails().startswith(f"audit entry {_first_keyed()}: signed with an unknown key")

    settings.GRACE = {**settings.GRACE, "AUDIT_KEY_FALLBACKS": [old_key]}
    assert "Audit log intact" in _verify()

    # An entry signed with the former key after the current one took over: refused.
    settings.GRACE = {**settings.GRACE, "AUDIT_KEY": old_key, "AUDIT_KEY_FALLBACKS": []}
    _append(1)
    settings.GRACE = {**settings.GRACE, "AUDIT_KEY": WRONG_KEY, "AUDIT_KEY_FALLBACKS": [old_key]}
    assert _verify_fails().startswith(
        f"audit entry {new_rows[-1].sequence + 1}: signed with a former key"
    )


def _first_keyed() -> int:
    return AuditEntry.objects.exclude(key_id="").order_by("sequence")[0].sequence


def test_audit_checkpoint_appends_a_line_and_logs_it(checkpoint_file, json_log):
    (row,) = _append(1)
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out)
    assert out.getvalue().strip() == (
        f"Checkpoint of audit entry {row.sequence}, hash {row.entry_hash}: appended to "
        f"{checkpoint_file}."
    )
    (line,) = [json.loads(text) for text in checkpoint_file.read_text().splitlines()]
    assert (line["sequence"], line["entry_hash"], line["source"]) == (
        row.sequence,
        row.entry_hash,
        "command",
    )
    logged = [r["audit_checkpoint"] for r in json_log.records() if "audit_checkpoint" in r]
    assert len(logged) == 1
    assert (logged[0]["sequence"], logged[0]["entry_hash"], logged[0]["path"]) == (
        row.sequence,
        row.entry_hash,
        str(checkpoint_file),
    )


def test_a_line_cut_short_by_a_crash_leaves_the_others_valid(checkpoint_file):
    _append(1)
    audit_checkpoint()
    with checkpoint_file.open("ab") as handle:
        handle.write(b'{"sequence": 99999999, "entry_h')  # the crash
    _append(1)
    audit_checkpoint()
    read = checkpoints_read(checkpoint_file)
    assert [c.line for c in read.checkpoints] == [1, 3]
    assert read.notes == ["line 2 is not a checkpoint (cut short?): skipped"]
    err = io.StringIO()
    call_command("verify_audit_log", stdout=io.StringIO(), stderr=err)
    assert "line 2 is not a checkpoint" in err.getvalue()


def test_verify_takes_another_checkpoint_file(checkpoint_file, tmp_path):
    _append(1)
    audit_checkpoint()
    other = tmp_path / "copy.jsonl"
    other.write_bytes(checkpoint_file.read_bytes())
    out = io.StringIO()
    call_command("verify_audit_log", "--checkpoints", str(other), stdout=out)
    assert f"holds all 1 checkpoints of {other}" in out.getvalue()
    with pytest.raises(CommandError, match="does not exist"):
        call_command("verify_audit_log", "--checkpoints", str(tmp_path / "none.jsonl"))


def test_the_default_checkpoint_file_is_beside_a_sqlite_database(settings):
    settings.GRACE = {**settings.GRACE, "AUDIT_CHECKPOINT_PATH": ""}
    path = checkpoint_path()
    if connection.vendor == "sqlite":
        database = Path(connection.settings_dict["NAME"])
        assert path == database.with_name(database.stem + ".audit-checkpoints.jsonl")
    else:
        assert path is None
    settings.GRACE = {**settings.GRACE, "AUDIT_CHECKPOINT_PATH": "off"}
    assert checkpoint_path() is None


def _deploy_warnings() -> set[str]:
    return {str(m.id) for m in run_checks(include_deployment_checks=True, tags=["security"])}


def test_deploy_check_warns_on_the_development_key(settings, tmp_path):
    settings.SECRET_KEY = settings.INSECURE_SECRET_KEY
    settings.GRACE = {
        **settings.GRACE,
        "AUDIT_KEY": "",
        "AUDIT_CHECKPOINT_PATH": str(tmp_path / "c.jsonl"),
    }
    assert "grace.W030" in _deploy_warnings()
    settings.GRACE = {**settings.GRACE, "AUDIT_KEY": "k" * 40}
    assert not {"grace.W030", "grace.W032"} & _deploy_warnings()
    settings.GRACE = {**settings.GRACE, "AUDIT_KEY": "short"}
    assert "grace.W032" in _deploy_warnings()
    settings.GRACE = {**settings.GRACE, "AUDIT_CHECKPOINT_PATH": "off"}
    assert "grace.W031" in _deploy_warnings()
