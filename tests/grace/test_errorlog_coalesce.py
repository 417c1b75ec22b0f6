"""The error log holds server faults only, one row per distinct error, so no client can
flush its history: before, every occurrence was a row (300 frames, 300 rows; 10,000 of
them erased the log) and every client error that escaped a handler was one too."""

from __future__ import annotations

import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import Http404
from django.utils import timezone
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError

from grace.api import ApiError
from grace.errorlog import errorlog_prune, errorlog_record, errorlog_upsert
from grace.json_body import InvalidJson
from grace.models import ErrorLog
from tests.grace.support import assert_error

pytestmark = pytest.mark.urls("tests.grace.urls")


def _raise(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def _boom(text: str = "kaput") -> Exception:
    return _raise(RuntimeError(text))


@pytest.mark.django_db(transaction=True)
def test_a_repeated_500_is_one_row_with_its_count(client):
    ids = [assert_error(client.get("/api/test/boom"), 500)["request_id"] for _ in range(5)]
    row = ErrorLog.objects.get()
    assert row.count == 5
    assert row.request_id == ids[-1]  # the newest occurrence's request
    assert row.exception_class == "builtins.RuntimeError" and row.path == "/api/test/boom"
    assert row.last_seen >= row.created
    assert row.fingerprint and len(row.fingerprint) == 64


@pytest.mark.django_db(transaction=True)
def test_different_errors_are_different_rows(client):
    client.get("/api/test/boom")
    client.get("/api/test/boom")
    errorlog_record(exc=_boom(), request=SimpleNamespace(path="/ws/chat/", method="WEBSOCKET"))
    errorlog_record(exc=_raise(KeyError("k")), request_id="r")
    counts = sorted(ErrorLog.objects.values_list("exception_class", "path", "count"))
    assert counts == [
        ("builtins.KeyError", "", 1),
        ("builtins.RuntimeError", "/api/test/boom", 2),
        ("builtins.RuntimeError", "/ws/chat/", 1),
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "exc",
    [
        Http404("no"),
        PermissionDenied(),
        SuspiciousOperation("host"),
        ApiError("taken", status=409),
        HttpError(429, "slow down"),
        NinjaValidationError([]),
        InvalidJson("deep", problem="too_deep"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_client_errors_are_not_rows(exc):
    assert errorlog_record(exc=_raise(exc)) is None
    assert errorlog_record(exc=_boom(), status=400) is None  # a 4xx status given
    assert not ErrorLog.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_one_error_cannot_flush_the_others(settings):
    """300 repeats (the websocket finding's burst) with room for 5 rows: the 3 older
    errors stay, the burst is one row of 300."""
    settings.GRACE = {**settings.GRACE, "ERROR_LOG_MAX_ROWS": 5}
    for name in ("/a", "/b", "/c"):
        errorlog_record(exc=_boom(), request=SimpleNamespace(path=name, method="GET"))
    for _ in range(300):
        errorlog_record(exc=_boom(), request=SimpleNamespace(path="/ws/chat/", method="WS"))
    rows = dict(ErrorLog.objects.values_list("path", "count"))
    assert rows == {"/a": 1, "/b": 1, "/c": 1, "/ws/chat/": 300}


@pytest.mark.django_db(transaction=True)
def test_prune_keeps_the_most_recently_seen(settings):
    """An old error that keeps happening is not pruned for being old."""
    settings.GRACE = {**settings.GRACE, "ERROR_LOG_MAX_ROWS": 2}
    now = timezone.now()
    ErrorLog.objects.bulk_create(
        [
            ErrorLog(request_id="old-but-recurring", last_seen=now),
            ErrorLog(request_id="middle", last_seen=now - timedelta(hours=2)),
            ErrorLog(request_id="newer", last_seen=now - timedelta(hours=1)),
        ]
    )
    assert errorlog_prune() == 1
    assert sorted(ErrorLog.objects.values_list("request_id", flat=True)) == [
        "newer",
        "old-but-recurring",
    ]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_error_make_one_row():
    """8 threads x 10 occurrences of one fingerprint, each on its own connection, all
    starting together: one row, count 80 (UPDATE-or-INSERT with a unique fingerprint)."""
    threads, each = 8, 10
    barrier = threading.Barrier(threads)
    failures: list[BaseException] = []
    fields = {
        "request_id": "race",
        "method": "GET",
        "path": "/race",
        "status": 500,
        "exception_class": "builtins.RuntimeError",
        "message": "m",
        "traceback": "t",
        "user_id": None,
    }

    def write() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(each):
                errorlog_upsert(fields=fields, fingerprint="f" * 64)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=write) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not failures, failures
    assert list(ErrorLog.objects.values_list("fingerprint", "count")) == [("f" * 64, 80)]


def test_admin_lists_count_and_last_seen(admin_client):
    ErrorLog.objects.create(
        request_id="seen-often", path="/api/x", exception_class="builtins.KeyError", count=42
    )
    html = admin_client.get("/admin/grace/errorlog/").content.decode()
    assert "column-count" in html and "column-last_seen" in html
    assert '<td class="field-count">42</td>' in html


@pytest.mark.django_db(transaction=True)
def test_migration_keeps_every_row():
    executor = MigrationExecutor(connection)
    before = [("grace", "0004_auditentry_key_id")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("grace", "ErrorLog")
    first = old.objects.create(request_id="a", exception_class="x.Y", message="one")
    second = old.objects.create(request_id="b", exception_class="x.Y", message="one")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    rows = {row.pk: row for row in ErrorLog.objects.all()}
    assert set(rows) == {first.pk, second.pk}
    for row in rows.values():
        assert row.count == 1 and row.fingerprint is None
        assert row.last_seen == row.created
