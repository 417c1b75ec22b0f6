"""The audit chain across processes, on SQLite files and on PostgreSQL: four processes
appending at once leave one valid chain; on PostgreSQL the triggers refuse UPDATE,
DELETE and TRUNCATE, and a tampered row makes ``verify_audit_log`` exit non-zero; with
the triggers dropped, deleting the newest entries is found by the checkpoint file."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.grace.ops_support import manage_popen, manage_run
from tests.servers import migrate, project_env, scratch_postgres_database

pytestmark = pytest.mark.slow

PROCESSES = 4
APPENDS = 40

APPEND_SCRIPT = """
import time
from grace.audit import AuditDraft, audit_append
time.sleep(max(0.0, {start} - time.time()))
for i in range({n}):
    audit_append(entries=[AuditDraft(
        action="test.concurrent", actor="proc:{proc}", resource=f"proc{proc}:{{i}}",
        payload={{"i": i}},
    )])
"""


def _append_concurrently(env: dict[str, str]) -> None:
    start = time.time() + 4.0  # every process is up (Django loaded) before anyone appends
    procs = [
        manage_popen(env, "shell", "-c", APPEND_SCRIPT.format(start=start, n=APPENDS, proc=p))
        for p in range(PROCESSES)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]


def _check_chain(env: dict[str, str], rows: list[tuple[int, str, str]]) -> None:
    total = PROCESSES * APPENDS
    assert [sequence for sequence, _, _ in rows] == list(range(1, total + 1))
    per_process = {f"proc:{p}": APPENDS for p in range(PROCESSES)}
    assert Counter(actor for _, actor, _ in rows) == per_process
    assert len({resource for _, _, resource in rows}) == total
    done = manage_run(env, "verify_audit_log")
    assert done.returncode == 0, done.stderr
    assert f"Audit log intact: {total} entries" in done.stdout


def test_four_processes_keep_one_chain_on_sqlite(tmp_path: Path):
    env = project_env(tmp_path)
    migrate(env)
    _append_concurrently(env)
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        rows = db.execute(
            "SELECT sequence, actor, resource FROM grace_auditentry ORDER BY sequence"
        ).fetchall()
    _check_chain(env, rows)


@pytest.fixture
def pg_env(postgres_url: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """A fresh, migrated PostgreSQL database (dropped afterwards) and the env that uses it."""
    with scratch_postgres_database(postgres_url, "grace_audit") as url:
        env = project_env(tmp_path, {"DATABASE_URL": url})
        migrate(env)
        yield env, url.replace("postgres://", "postgresql://")


def test_four_processes_keep_one_chain_on_postgresql(pg_env):
    import psycopg

    env, url = pg_env
    _append_concurrently(env)
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT sequence, actor, resource FROM grace_auditentry ORDER BY sequence"
        ).fetchall()
    _check_chain(env, rows)


def test_postgresql_refuses_changes_and_verify_finds_tampering(pg_env):
    import psycopg

    env, url = pg_env
    done = manage_run(env, "shell", "-c", APPEND_SCRIPT.format(start=0, n=3, proc=0))
    assert done.returncode == 0, done.stderr
    for sql in (
        "UPDATE grace_auditentry SET actor = 'mallory' WHERE sequence = 2",
        "DELETE FROM grace_auditentry WHERE sequence = 2",
        "TRUNCATE grace_auditentry",
    ):
        with psycopg.connect(url) as db, pytest.raises(psycopg.Error, match="append-only"):
            db.execute(sql)
    with psycopg.connect(url) as db:
        assert db.execute("SELECT count(*) FROM grace_auditentry").fetchone() == (3,)
        db.execute("DROP TRIGGER grace_auditentry_no_update ON grace_auditentry")
        db.execute("UPDATE grace_auditentry SET payload = '{\"i\": 7}' WHERE sequence = 2")
    done = manage_run(env, "verify_audit_log")
    assert done.returncode != 0
    assert "audit entry 2: entry_hash is not the HMAC of its fields" in done.stderr


def _checkpoint_then_delete_newest(env: dict[str, str], delete: Any) -> None:
    done = manage_run(env, "shell", "-c", APPEND_SCRIPT.format(start=0, n=5, proc=0))
    assert done.returncode == 0, done.stderr
    done = manage_run(env, "audit_checkpoint")
    assert done.returncode == 0, done.stderr
    assert "Checkpoint of audit entry 5" in done.stdout
    delete()  # as a database administrator: triggers dropped, entries 4 and 5 deleted
    done = manage_run(env, "verify_audit_log")
    assert done.returncode != 0
    assert "audit entry 4: missing: the chain ends at entry 3" in done.stderr
    assert "records entry 5: the newest entries were deleted" in done.stderr


def test_deleting_the_newest_entries_is_found_by_the_default_checkpoint_file_on_sqlite(
    tmp_path: Path,
):
    env = project_env(tmp_path)
    migrate(env)

    def delete() -> None:
        with sqlite3.connect(tmp_path / "db.sqlite3") as db:
            db.execute("DROP TRIGGER grace_auditentry_no_delete")
            db.execute("DELETE FROM grace_auditentry WHERE sequence > 3")

    _checkpoint_then_delete_newest(env, delete)
    assert (tmp_path / "db.audit-checkpoints.jsonl").exists()


def test_deleting_the_newest_entries_is_found_by_the_checkpoint_file_on_postgresql(
    pg_env, tmp_path: Path
):
    import psycopg

    env, url = pg_env
    env = {**env, "GRACE_AUDIT_CHECKPOINT_PATH": str(tmp_path / "checkpoints.jsonl")}

    def delete() -> None:
        with psycopg.connect(url) as db:
            db.execute("DROP TRIGGER grace_auditentry_no_update ON grace_auditentry")
            db.execute("DELETE FROM grace_auditentry WHERE sequence > 3")

    _checkpoint_then_delete_newest(env, delete)
