"""The audit chain in-process (SQLite): appends, triggers, tampering found by
``verify_audit_log``, and ``safe_log`` under injected faults.

The audit table is never flushed between tests (it is append-only), so every test looks
only at the entries it made.
"""

from __future__ import annotations

import importlib
import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from grace.audit import AuditDraft, audit_append, audit_verify, entry_hash_compute
from grace.audit_writer import audit_flush, safe_log
from grace.models import AuditEntry
from tests.timing import limit

pytestmark = pytest.mark.django_db(transaction=True)

migration = importlib.import_module("grace.migrations.0002_auditentry")


def _marker() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def test_appends_form_one_verifiable_chain():
    resource = _marker()
    rows = audit_append(
        entries=[
            AuditDraft(action="test.first", resource=resource, payload={"ids": [3, 1]}),
            AuditDraft(action="test.second", resource=resource, request_id=lambda: "rid-1"),
        ]
    )
    assert rows[1].sequence == rows[0].sequence + 1
    assert rows[1].previous_hash == rows[0].entry_hash
    stored = list(AuditEntry.objects.filter(resource=resource).order_by("sequence"))
    assert [e.action for e in stored] == ["test.first", "test.second"]
    assert stored[1].request_id == "rid-1"
    assert all(entry_hash_compute(e) == e.entry_hash for e in stored)
    report = audit_verify()
    assert report.ok and report.head_sequence >= rows[1].sequence


def test_a_large_batch_is_inserted_in_power_of_two_steps_and_chains():
    """300 entries: inserts of 64 rows (SQLite's 999 parameters allow 111 rows of nine
    fields), then 32, 8 and 4: a few statement shapes for sqlite3's per-connection cache, not
    one per batch size. One unbroken chain, in order."""
    from django.test.utils import CaptureQueriesContext

    resource = _marker()
    with CaptureQueriesContext(connection) as queries:
        rows = audit_append(
            entries=[AuditDraft(action="test.bulk", resource=resource, payload={"n": n})
                     for n in range(300)]
        )
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    if connection.vendor == "sqlite":
        assert [sql.count("), (") + 1 for sql in inserts] == [64] * 4 + [32, 8, 4]
    else:  # PostgreSQL: 256, 32, 8 and 4 rows, each statement one UNNEST of arrays
        assert len(inserts) == 4
    stored = list(AuditEntry.objects.filter(resource=resource).order_by("sequence"))
    assert [e.payload["n"] for e in stored] == list(range(300))
    assert [e.sequence for e in stored] == [r.sequence for r in rows]
    assert all(b.previous_hash == a.entry_hash for a, b in itertools.pairwise(stored))
    assert audit_verify().ok


@pytest.mark.sqlite_only("RAISE(ABORT) is an IntegrityError; PostgreSQL: test_audit_processes")
def test_triggers_refuse_update_and_delete():
    (row,) = audit_append(entries=[AuditDraft(action="test.immutable", resource=_marker())])
    for sql in (
        "UPDATE grace_auditentry SET actor = 'mallory' WHERE sequence = %s",
        "DELETE FROM grace_auditentry WHERE sequence = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [row.sequence])
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(sequence=row.sequence).update(action="test.changed")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(sequence=row.sequence).delete()
    assert AuditEntry.objects.get(sequence=row.sequence).actor == "system"
    assert audit_verify().ok


@pytest.fixture
def triggers_dropped() -> Iterator[None]:
    """Drop the triggers (what an attacker with the database would do); put them back."""
    create, drop = migration.triggers_sql(connection.vendor)
    with connection.cursor() as cursor:
        for statement in drop:
            cursor.execute(statement)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for statement in create:
                cursor.execute(statement)


def _set(sequence: int, **fields: Any) -> None:
    columns = ", ".join(f"{name} = %s" for name in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE grace_auditentry SET {columns} WHERE sequence = %s",  # noqa: S608
            [*fields.values(), sequence],
        )


def test_tampered_row_makes_verify_fail_at_that_entry(triggers_dropped):
    rows = audit_append(
        entries=[AuditDraft(action="test.tamper", resource=_marker()) for _ in range(3)]
    )
    victim = rows[1]
    original_hash = victim.entry_hash
    _set(victim.sequence, actor="mallory")
    try:
        with pytest.raises(CommandError, match=rf"audit entry {victim.sequence}: entry_hash"):
            call_command("verify_audit_log")
        # Re-hashing the tampered row does not help: the next entry points at the old hash.
        victim.actor = "mallory"
        _set(victim.sequence, entry_hash=entry_hash_compute(victim))
        with pytest.raises(CommandError, match=rf"audit entry {rows[2].sequence}: previous_hash"):
            call_command("verify_audit_log")
    finally:
        _set(victim.sequence, actor="system", entry_hash=original_hash)
    call_command("verify_audit_log")


def test_removed_row_is_a_gap_named_by_the_next_entry(triggers_dropped):
    rows = audit_append(
        entries=[AuditDraft(action="test.gap", resource=_marker()) for _ in range(3)]
    )
    gone = rows[1]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM grace_auditentry WHERE sequence = %s", [gone.sequence])
    try:
        report = audit_verify()
        assert report.problem is not None
        assert report.problem.sequence == rows[2].sequence
        assert f"entry {gone.sequence} is missing" in report.problem.reason
    finally:
        AuditEntry.objects.bulk_create([gone])
    assert audit_verify().ok


def test_verify_command_reports_an_intact_chain(capsys):
    audit_append(entries=[AuditDraft(action="test.command", resource=_marker())])
    call_command("verify_audit_log")
    assert "Audit log intact" in capsys.readouterr().out


def test_safe_log_appends_and_returns_true(ops_chat):
    resource = _marker()
    assert safe_log(action="test.safe", resource=resource, request_id="rid-safe", wait=True)
    entry = AuditEntry.objects.get(resource=resource)
    assert (entry.action, entry.request_id, entry.actor) == ("test.safe", "rid-safe", "system")


def test_safe_log_without_waiting_appends_soon(ops_chat):
    resource = _marker()
    assert safe_log(action="test.nowait", resource=resource, wait=False) is True
    assert audit_flush(5.0)
    assert AuditEntry.objects.filter(resource=resource).count() == 1


@pytest.mark.parametrize("mode", ["error", "timeout", "hang"])
def test_safe_log_with_an_injected_fault_returns_false_in_bounded_time(ops_chat, mode):
    ops_chat.GRACE = {
        **ops_chat.GRACE,
        "FAULTS": {"audit": mode},
        "AUDIT_TIMEOUT": 0.3,
    }
    resource = _marker()
    started = time.monotonic()
    assert safe_log(action="test.fault", resource=resource, wait=True) is False
    assert time.monotonic() - started < 0.3 + limit(1.0)
    ops_chat.GRACE = {**ops_chat.GRACE, "FAULTS": {}}
    from grace.faults import faults_release

    faults_release()
    assert audit_flush(limit(5.0))
    # Positive control: the same writer stores the next entry, so this one was dropped,
    # not merely late.
    control = _marker()
    assert safe_log(action="test.fault", resource=control, wait=True, timeout=limit(5.0))
    assert AuditEntry.objects.filter(resource=control).exists()
    assert not AuditEntry.objects.filter(resource=resource).exists()


def test_safe_log_is_off_with_the_feature(ops_chat):
    ops_chat.GRACE = {**ops_chat.GRACE, "DISABLED_FEATURES": ["audit"]}
    resource = _marker()
    assert safe_log(action="test.off", resource=resource, wait=True) is False
    assert not AuditEntry.objects.filter(resource=resource).exists()
