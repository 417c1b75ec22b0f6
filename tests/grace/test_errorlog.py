"""The error log: a row per unhandled exception, bounded, read-only in the admin, and
never a reason for the client not to get its JSON 500."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import connection

from grace.errorlog import errorlog_prune, errorlog_record
from grace.models import ErrorLog
from tests.grace.support import assert_error
from tests.timing import wait_until_async

pytestmark = pytest.mark.urls("tests.grace.urls")


def _boom(text: str = "kaput") -> Exception:
    try:
        raise ValueError(text)
    except ValueError as exc:
        return exc


@pytest.mark.django_db(transaction=True)
def test_record_writes_a_row_with_the_traceback():
    assert errorlog_record(exc=_boom(), request_id="rec-1") is True
    row = ErrorLog.objects.get()
    assert row.request_id == "rec-1" and row.status == 500
    assert row.exception_class == "builtins.ValueError" and row.message == "kaput"
    assert "Traceback" in row.traceback and "in _boom" in row.traceback


@pytest.mark.django_db(transaction=True)
async def test_record_from_the_event_loop_does_not_wait():
    assert errorlog_record(exc=_boom(), request_id="loop-1") is None
    await wait_until_async(ErrorLog.objects.filter(request_id="loop-1").aexists, timeout=5,
                           message="the row written by the writer thread")


@pytest.mark.django_db(transaction=True)
def test_log_is_bounded_to_the_newest_rows(settings):
    settings.GRACE = {**settings.GRACE, "ERROR_LOG_MAX_ROWS": 3}
    for i in range(6):  # six distinct errors (paths); repeats of one would be one row
        request = SimpleNamespace(path=f"/bound/{i}", method="GET")
        assert errorlog_record(exc=_boom(f"n{i}"), request=request) is True
    assert list(ErrorLog.objects.order_by("pk").values_list("message", flat=True)) == [
        "n3",
        "n4",
        "n5",
    ]


@pytest.mark.django_db
def test_prune_keeps_the_newest(settings):
    ErrorLog.objects.bulk_create([ErrorLog(request_id=f"p{i}") for i in range(10)])
    settings.GRACE = {**settings.GRACE, "ERROR_LOG_MAX_ROWS": 4}
    assert errorlog_prune() == 6
    assert sorted(ErrorLog.objects.values_list("request_id", flat=True)) == [
        "p6",
        "p7",
        "p8",
        "p9",
    ]


@pytest.fixture
def dropped_errorlog_table():
    """The error log table is gone (as if the database lost it); restored afterwards."""
    with connection.schema_editor() as editor:
        editor.delete_model(ErrorLog)
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(ErrorLog)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/api/test/boom", "/api/plain/boom"])
def test_json_500_when_the_error_log_cannot_be_written(
    client, settings, json_log, dropped_errorlog_table, path
):
    settings.DEBUG = True
    client.raise_request_exception = False
    response = client.get(path, headers={"X-Request-ID": "no-table"})
    assert_error(response, 500, "internal_error")
    lines = [r for r in json_log.records() if r["logger"] == "grace.errorlog"]
    assert lines, json_log.text
    line = lines[0]
    assert line["level"] == "ERROR" and line["request_id"] == "no-table"
    assert "builtins.RuntimeError" in line["message"]
    assert "secret-detail-xyz" in line["traceback"] and "Traceback" in line["traceback"]


@pytest.mark.django_db(transaction=True)
async def test_json_500_from_async_view_when_the_error_log_cannot_be_written(
    async_client, json_log, dropped_errorlog_table
):
    response = await async_client.get("/api/test/aboom", headers={"X-Request-ID": "no-table-a"})
    assert_error(response, 500, "internal_error")
    await wait_until_async(lambda: "grace.errorlog" in json_log.text, timeout=5,
                           message="the error logged instead of stored")
    (line,) = [r for r in json_log.records() if r["logger"] == "grace.errorlog"]
    assert line["request_id"] == "no-table-a" and "in aboom" in line["traceback"]


@pytest.mark.django_db(transaction=True)
def test_error_log_row_records_the_user(client, django_user_model):
    user = django_user_model.objects.create_user("ann", password="pw-123-long-enough")
    client.force_login(user)
    response = client.get("/api/test/boom")
    row = ErrorLog.objects.get(request_id=response["X-Request-ID"])
    assert row.user_id == user.pk


@pytest.mark.django_db(transaction=True)
async def test_error_log_row_records_the_user_of_an_async_view(async_client, django_user_model):
    """The lazy user is loaded in the writer thread, not on the event loop."""
    from asgiref.sync import sync_to_async

    user = await sync_to_async(django_user_model.objects.create_user)(
        "bea", password="pw-123-long-enough"
    )
    await async_client.aforce_login(user)
    response = await async_client.get("/api/test/aboom")
    rid = response["X-Request-ID"]
    row = await wait_until_async(ErrorLog.objects.filter(request_id=rid).afirst, timeout=5,
                                 message="the error log row")
    assert row.user_id == user.pk


@pytest.fixture
def rows(db):
    return [
        ErrorLog.objects.create(
            request_id="find-me-123",
            method="POST",
            path="/api/chat/",
            status=500,
            exception_class="builtins.KeyError",
            message="'x'",
            traceback="Traceback ...",
        ),
        ErrorLog.objects.create(
            request_id="other-456",
            method="GET",
            path="/api/health",
            status=500,
            exception_class="builtins.ValueError",
            message="bad",
            traceback="Traceback ...",
        ),
    ]


def test_admin_changelist_search_and_filters(admin_client, rows):
    base = "/admin/grace/errorlog/"
    page = admin_client.get(base)
    assert page.status_code == 200 and page["X-Request-ID"]
    html = page.content.decode()
    assert "find-me-123" in html and "other-456" in html
    assert "By exception class" in html or "exception class" in html.lower()

    found = admin_client.get(base, {"q": "find-me-123"}).content.decode()
    assert "find-me-123" in found and "other-456" not in found

    filtered = admin_client.get(base, {"exception_class": "builtins.ValueError"}).content
    assert b"other-456" in filtered and b"find-me-123" not in filtered


def test_admin_is_read_only(admin_client, rows):
    row = rows[0]
    assert admin_client.get("/admin/grace/errorlog/add/").status_code == 403
    detail = admin_client.get(f"/admin/grace/errorlog/{row.pk}/change/")
    assert detail.status_code == 200
    assert b"find-me-123" in detail.content
    assert b'name="_save"' not in detail.content
    delete = admin_client.post(f"/admin/grace/errorlog/{row.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403
    assert ErrorLog.objects.filter(pk=row.pk).exists()
    posted = admin_client.post(
        f"/admin/grace/errorlog/{row.pk}/change/", {"request_id": "changed", "status": 400}
    )
    assert posted.status_code == 403
    row.refresh_from_db()
    assert row.request_id == "find-me-123"
