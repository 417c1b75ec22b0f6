from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.core.checks import ERROR
from django.core.management import call_command
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from executor.backend import ExecutorBackend, ExecutorTask
from executor.checks import check_executor_options
from executor.compat import InvalidTaskError, TaskResultStatus, task, task_backends
from executor.exceptions import QueueFull
from executor.models import Status, TaskRecord
from grace.request_id import request_id_reset, request_id_set
from tests.executor import tasks
from tests.servers import ROOT, project_env


@pytest.mark.django_db
def test_enqueue_stores_a_ready_row_and_returns_its_result(executor_options) -> None:
    token = request_id_set("req-enqueue-1")
    try:
        result = tasks.add.using(priority=7).enqueue(2, b=3)
    finally:
        request_id_reset(token)
    assert isinstance(task_backends["default"], ExecutorBackend)
    assert result.status == TaskResultStatus.READY
    row = TaskRecord.objects.get(id=result.id)
    assert row.task_path == "tests.executor.tasks.add"
    assert (row.args, row.kwargs, row.priority) == ([2], {"b": 3}, 7)
    assert row.request_id == "req-enqueue-1"
    assert row.timeout == 30.0 and row.max_attempts == 3  # OPTIONS defaults
    fetched = tasks.add.get_result(result.id)
    assert fetched.id == result.id and fetched.status == TaskResultStatus.READY


@pytest.mark.django_db
def test_decorator_keywords_override_options(executor_options) -> None:
    assert isinstance(tasks.hang, ExecutorTask)
    row = TaskRecord.objects.get(id=tasks.hang.enqueue("/dev/null").id)
    assert (row.timeout, row.max_attempts) == (1.0, 1)


@pytest.mark.django_db
def test_invalid_task_keywords_are_refused(executor_options) -> None:
    with pytest.raises(InvalidTaskError, match="timeout"):
        task(timeout=0)(tasks.mark)
    with pytest.raises(InvalidTaskError, match="max_attempts"):
        task(max_attempts=0)(tasks.mark)
    with pytest.raises(InvalidTaskError, match="priority"):
        tasks.noop.using(priority=101)


@pytest.mark.django_db
def test_queue_full_at_the_bound_and_nothing_written(executor_options) -> None:
    executor_options(max_pending=3)
    for _ in range(3):
        tasks.noop.enqueue()
    tasks.noop.using(queue_name="other").enqueue()  # the bound is per queue
    before = list(TaskRecord.objects.values_list("sequence", "status"))
    with pytest.raises(QueueFull) as caught:
        tasks.noop.enqueue()
    assert caught.value.queue_name == "default" and caught.value.max_pending == 3
    assert caught.value.retry_after >= 1
    assert list(TaskRecord.objects.values_list("sequence", "status")) == before
    # A finished task frees its place.
    first = TaskRecord.objects.filter(queue_name="default").order_by("sequence").first()
    assert first is not None
    TaskRecord.objects.filter(sequence=first.sequence).update(status=Status.SUCCESSFUL)
    tasks.noop.enqueue()
    assert TaskRecord.objects.filter(status=Status.READY, queue_name="default").count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize("returning", [True, False], ids=["one-statement", "check-then-save"])
def test_the_bound_counts_ready_tasks_exactly_when_their_sequences_have_gaps(
    executor_options, monkeypatch, returning,
) -> None:
    """The span of READY sequences settles most enqueues; with gaps in it (tasks finished
    out of order) the exact count decides, both ways. Also on the path of databases
    without ``RETURNING`` (SQLite before 3.35): the same check, then ``save()``."""
    from executor.services import enqueue

    if not returning:
        monkeypatch.setattr(enqueue, "returning_supported", lambda connection: False)
    executor_options(max_pending=3)
    ids = [tasks.noop.enqueue().id for _ in range(3)]
    TaskRecord.objects.filter(id=ids[1]).update(status=Status.SUCCESSFUL)
    fourth = tasks.noop.enqueue()  # READY: 1st, 3rd, 4th; span 4, count 3 after it
    with pytest.raises(QueueFull):
        tasks.noop.enqueue()
    TaskRecord.objects.filter(id=ids[2]).update(status=Status.SUCCESSFUL)
    fifth = tasks.noop.enqueue()  # span 4 >= 3, but only 2 READY: written
    ready = TaskRecord.objects.filter(status=Status.READY).order_by("sequence")
    assert list(ready.values_list("id", flat=True)) == [ids[0], fourth.id, fifth.id]
    with pytest.raises(QueueFull):
        tasks.noop.enqueue()
    stored = TaskRecord.objects.get(id=fifth.id)
    assert (stored.task_path, stored.args, stored.kwargs, stored.attempts) == (
        "tests.executor.tasks.noop", [], {}, 0,
    )


@pytest.mark.django_db(transaction=True)
def test_enqueue_in_a_callers_transaction_joins_it_and_queue_full_leaves_it_usable(
    executor_options,
) -> None:
    """No savepoint per enqueue (each would be new SQL to sqlite3's statement cache), and a
    caller that catches ``QueueFull`` can go on and commit."""
    from django.db import transaction
    from django.test.utils import CaptureQueriesContext

    executor_options(max_pending=2)
    with CaptureQueriesContext(connections["default"]) as queries, transaction.atomic():
        first = tasks.noop.enqueue()
        tasks.noop.enqueue()
        with pytest.raises(QueueFull):
            tasks.noop.enqueue()
        later = tasks.noop.using(queue_name="other").enqueue()  # the transaction still works
    assert not [q["sql"] for q in queries.captured_queries if "SAVEPOINT" in q["sql"].upper()]
    assert TaskRecord.objects.filter(id__in=[first.id, later.id]).count() == 2
    assert TaskRecord.objects.count() == 3
    # A failure inside the caller's block still takes the enqueued rows with it.
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.noop.using(queue_name="other").enqueue()
        raise RuntimeError("the caller's own failure")
    assert TaskRecord.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_an_enqueue_is_one_statement_alone_and_in_a_callers_transaction(
    executor_options,
) -> None:
    """The room check, the queue's lock (PostgreSQL) and the insert: one round trip."""
    from django.db import transaction
    from django.test.utils import CaptureQueriesContext

    executor_options(max_pending=2)
    with CaptureQueriesContext(connections["default"]) as alone:
        tasks.noop.enqueue()
    with transaction.atomic(), CaptureQueriesContext(connections["default"]) as joined:
        tasks.noop.enqueue()
        with pytest.raises(QueueFull):
            tasks.noop.enqueue()
    assert [len(alone), len(joined)] == [1, 2]
    assert all(q["sql"].startswith("INSERT ") for q in [*alone, *joined])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_transaction", [False, True], ids=["alone", "callers-transaction"])
def test_concurrent_enqueues_never_pass_the_bound(executor_options, in_transaction) -> None:
    """Also when each enqueuer enqueues two at a time inside its own transaction (as a chat
    reply's store enqueues its follow-ups): the queue stays locked until that commits."""
    from django.db import transaction

    executor_options(max_pending=20)
    refused: list[int] = []

    def enqueue_one() -> None:
        try:
            tasks.noop.enqueue()
        except QueueFull:
            refused.append(1)

    def enqueue_many() -> None:
        try:
            for _ in range(8):
                if in_transaction:
                    with transaction.atomic():
                        enqueue_one()
                        enqueue_one()
                else:
                    enqueue_one()
                    enqueue_one()
        finally:
            connections.close_all()

    in_threads(enqueue_many, 4)
    assert TaskRecord.objects.count() == 20
    assert len(refused) == 4 * 16 - 20


def in_threads(target, count: int) -> None:
    """``target`` in ``count`` threads at once, until all of them are done."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def backend() -> ExecutorBackend:
    found = task_backends["default"]
    assert isinstance(found, ExecutorBackend)
    return found


@pytest.mark.django_db
@pytest.mark.parametrize("returning", [True, False], ids=["one-statement", "check-then-save"])
def test_enqueue_many_writes_all_or_none_at_the_bound(
    executor_options, monkeypatch, returning,
) -> None:
    """Room for all of them or nothing written, both ways (also where there is no
    ``RETURNING``): a queue with room for two refuses three, then takes two."""
    from executor.services import enqueue

    if not returning:
        monkeypatch.setattr(enqueue, "returning_supported", lambda connection: False)
    executor_options(max_pending=3)
    tasks.noop.enqueue()
    calls = [(tasks.echo, [n], {}) for n in range(3)]
    with pytest.raises(QueueFull) as caught:
        backend().enqueue_many(calls)
    assert caught.value.queue_name == "default"
    assert TaskRecord.objects.count() == 1
    token = request_id_set("req-many")
    try:
        results = backend().enqueue_many(calls[:2])
    finally:
        request_id_reset(token)
    assert [r.status for r in results] == [TaskResultStatus.READY] * 2
    stored = TaskRecord.objects.filter(task_path="tests.executor.tasks.echo").order_by("sequence")
    assert [(r.id, r.args, r.status, r.request_id) for r in stored] == [
        (results[0].id, [0], Status.READY, "req-many"),
        (results[1].id, [1], Status.READY, "req-many"),
    ]
    assert backend().get_result(results[1].id).args == [1]
    with pytest.raises(QueueFull):
        backend().enqueue_many(calls[:1])


@pytest.mark.django_db
@pytest.mark.parametrize("rows", [1, 2])
def test_the_rows_written_are_the_records_returned_field_by_field(executor_options, rows) -> None:
    """A new task's constant fields are SQL in the insert, its other fields parameters:
    what is stored is what the enqueue returned, every field (one task and several)."""
    from executor.services import tasks_enqueue

    options = backend().settings
    calls = [(tasks.echo.using(priority=5), [n, {"k": [n]}], {"x": "y"}) for n in range(rows)]
    records = tasks_enqueue(backend="default", options=options, calls=calls, request_id="r-1")
    for record in records:
        stored = TaskRecord.objects.get(id=record.id)
        for field in TaskRecord._meta.concrete_fields:
            assert getattr(stored, field.attname) == getattr(record, field.attname), field.name
    assert [r.status for r in records] == [Status.READY] * rows


@pytest.mark.django_db(transaction=True)
def test_enqueue_many_of_one_queue_is_one_statement_and_queue_full_keeps_a_transaction(
    executor_options,
) -> None:
    from django.db import transaction
    from django.test.utils import CaptureQueriesContext

    executor_options(max_pending=3)
    calls = [(tasks.echo, [n], {}) for n in range(2)]
    with CaptureQueriesContext(connections["default"]) as alone:
        backend().enqueue_many(calls)
    with transaction.atomic(), CaptureQueriesContext(connections["default"]) as joined:
        with pytest.raises(QueueFull):
            backend().enqueue_many(calls)
        kept = tasks.noop.enqueue()  # the last place, in the same transaction
    assert [len(alone), len(joined)] == [1, 2]
    assert all("INSERT " in q["sql"] for q in [*alone, *joined])
    assert TaskRecord.objects.count() == 3 and TaskRecord.objects.filter(id=kept.id).exists()


@pytest.mark.django_db(transaction=True)
def test_enqueue_many_over_two_queues_writes_neither_when_one_is_full(executor_options) -> None:
    from django.db import transaction

    executor_options(max_pending=2)
    tasks.noop.using(queue_name="other").enqueue()
    both = [(tasks.noop, [], {}), (tasks.noop.using(queue_name="other"), [], {}),
            (tasks.noop.using(queue_name="other"), [], {})]
    with pytest.raises(QueueFull) as caught:
        backend().enqueue_many(both)
    assert caught.value.queue_name == "other"
    assert TaskRecord.objects.count() == 1
    with transaction.atomic():  # inside a caller's transaction too, which stays usable
        with pytest.raises(QueueFull):
            backend().enqueue_many(both)
        tasks.noop.enqueue()
    assert TaskRecord.objects.count() == 2
    written = backend().enqueue_many(both[:2])
    assert TaskRecord.objects.filter(id__in=[r.id for r in written]).count() == 2


@pytest.mark.django_db(transaction=True)
def test_enqueue_many_statement_runs_in_the_callers_transaction(executor_options) -> None:
    """The caller runs the statement itself (in its transaction) and hands back its rows:
    the results, announced; no room for all of them: nothing written, ``QueueFull``."""
    from django.db import transaction
    from django_tasks.signals import task_enqueued

    heard: list[str] = []

    def receiver(sender, task_result, **kwargs) -> None:
        heard.append(task_result.id)

    task_enqueued.connect(receiver)
    executor_options(max_pending=3)
    calls = [(tasks.echo, [n], {}) for n in range(2)]
    prepared = backend().enqueue_many_statement(calls)
    assert prepared is not None
    with transaction.atomic(), connections["default"].cursor() as cursor:
        cursor.execute(prepared.sql, prepared.params)
        rows = cursor.fetchall()
    results = prepared.finish(rows)
    assert [r.args for r in results] == [[0], [1]]
    task_enqueued.disconnect(receiver)
    assert heard == [r.id for r in results]
    assert TaskRecord.objects.filter(id__in=[r.id for r in results]).count() == 2
    full = backend().enqueue_many_statement(calls)
    assert full is not None
    with connections["default"].cursor() as cursor:
        cursor.execute(full.sql, full.params)
        rows = cursor.fetchall()
    with pytest.raises(QueueFull):
        full.finish(rows)
    assert TaskRecord.objects.count() == 2
    assert backend().enqueue_many_statement(  # several queues: not one statement
        [(tasks.noop, [], {}), (tasks.noop.using(queue_name="other"), [], {})]) is None


@pytest.mark.django_db
def test_enqueue_many_refuses_a_task_of_another_backend(executor_options, settings) -> None:
    settings.TASKS = {**settings.TASKS, "second": settings.TASKS["default"]}
    with pytest.raises(InvalidTaskError, match="backend 'second'"):
        backend().enqueue_many([(tasks.noop, [], {}), (tasks.noop.using(backend="second"), [], {})])
    assert TaskRecord.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_enqueue_many_never_passes_the_bound_nor_splits_a_batch(
    executor_options,
) -> None:
    """Four threads enqueue pairs, each in a transaction of its own with another write
    before it (as a chat reply's store): the bound (21) is never passed and no pair is
    split, so exactly ten pairs are written."""
    from django.db import transaction

    executor_options(max_pending=21)
    refused: list[int] = []

    def pairs() -> None:
        try:
            for n in range(8):
                try:
                    with transaction.atomic():
                        TaskRecord.objects.filter(pk=-1).update(attempts=0)
                        backend().enqueue_many([(tasks.echo, [n], {}), (tasks.echo, [-n], {})])
                except QueueFull:
                    refused.append(1)
        finally:
            connections.close_all()

    in_threads(pairs, 4)
    assert TaskRecord.objects.count() == 20
    assert len(refused) == 4 * 8 - 10


@pytest.mark.django_db(transaction=True)
def test_an_enqueue_waiting_for_the_lock_sees_what_was_committed_meanwhile(
    executor_options,
) -> None:
    """The room check reads the queue once the enqueue holds the write lock (SQLite) or
    the queue's lock (PostgreSQL), not before: another transaction holds the lock and
    fills the queue while an enqueue waits for it; once that commits, the enqueue finds
    the queue full. (A check on a snapshot taken before the wait would let it pass.)"""
    from django.db import transaction

    from executor.db import queue_lock

    executor_options(max_pending=3)
    ids = [tasks.noop.enqueue().id for _ in range(3)]
    TaskRecord.objects.filter(id=ids[0]).update(status=Status.SUCCESSFUL)  # room for one
    holding, release = threading.Event(), threading.Event()
    outcome: list[str] = []

    def fill_while_holding() -> None:
        try:
            with transaction.atomic():
                queue_lock(using="default", backend="default", queue="default")
                TaskRecord.objects.filter(id=ids[0]).update(status=Status.READY)  # full
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    def enqueue() -> None:
        try:
            tasks.noop.enqueue()
            outcome.append("written")
        except QueueFull:
            outcome.append("full")
        finally:
            connections.close_all()

    holder = threading.Thread(target=fill_while_holding)
    holder.start()
    assert holding.wait(10)
    waiter = threading.Thread(target=enqueue)
    waiter.start()
    waiter.join(0.3)  # it waits for the lock (or has not started yet: the same outcome)
    release.set()
    holder.join(10)
    waiter.join(10)
    assert outcome == ["full"]
    assert TaskRecord.objects.filter(status=Status.READY).count() == 3


@pytest.mark.django_db(transaction=True)
async def test_aenqueue_and_aget_result(executor_options) -> None:
    result = await tasks.async_add.aenqueue(1, 2)
    fetched = await tasks.async_add.aget_result(result.id)
    assert fetched.status == TaskResultStatus.READY


@pytest.mark.django_db
def test_run_after_is_stored(executor_options) -> None:
    when = timezone.now() + timedelta(minutes=5)
    result = tasks.noop.using(run_after=when).enqueue()
    assert TaskRecord.objects.get(id=result.id).run_after == when


def test_system_checks_refuse_invalid_options(settings) -> None:
    settings.TASKS = {
        "default": {
            "BACKEND": "executor.backend.ExecutorBackend",
            "QUEUES": [],
            "OPTIONS": {"max_pending": 0, "lease_seconds": "soon", "colour": "blue",
                        "retry_backoff": 10, "retry_backoff_max": 1},
        }
    }
    ids = sorted({m.id for m in check_executor_options()})
    assert ids == ["executor.E001", "executor.E002", "executor.E006", "executor.E009"]
    settings.TASKS["default"]["OPTIONS"] = {"retry_backoff": 10, "retry_backoff_max": 1}
    settings.TASKS["default"]["QUEUES"] = ["default"]
    assert [m.id for m in check_executor_options()] == ["executor.E008"]
    with pytest.raises(Exception, match="E008"):
        call_command("check")


def test_valid_options_pass_the_checks(executor_options) -> None:
    assert check_executor_options() == []


@pytest.mark.parametrize(
    ("options", "check_id"),
    [
        # Infinite or past a week: the lease and the retry dates overflow (OverflowError on
        # every claim), a NaN timeout never expires, a huge count overflows a SQL bigint.
        ({"lease_seconds": float("inf")}, "executor.E006"),
        ({"lease_seconds": 1e12}, "executor.E006"),
        ({"default_timeout": float("nan")}, "executor.E004"),
        ({"default_timeout": float("inf")}, "executor.E004"),
        ({"shutdown_grace_seconds": float("inf")}, "executor.E007"),
        ({"shutdown_grace_seconds": -1}, "executor.E007"),
        ({"retry_backoff": float("nan")}, "executor.E008"),
        ({"retry_backoff_max": 1e12}, "executor.E008"),
        ({"retain_finished": 10**30}, "executor.E003"),
        ({"max_pending": 10**30}, "executor.E002"),
    ],
)
def test_options_must_be_finite_and_bounded(executor_options, options, check_id) -> None:
    executor_options(**options)
    [message] = check_executor_options()
    assert message.id == check_id
    assert "a week" in message.msg or "1000000000" in message.msg


def test_options_at_their_bounds_pass(executor_options) -> None:
    week = 604_800
    executor_options(lease_seconds=week, default_timeout=week, shutdown_grace_seconds=week,
                     retry_backoff=week, retry_backoff_max=week, retain_finished=10**9,
                     max_pending=10**9)
    assert check_executor_options() == []


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 1e12, -1, True])
def test_a_task_timeout_must_be_finite_and_bounded(executor_options, timeout) -> None:
    with pytest.raises(InvalidTaskError, match="timeout must be a finite number of seconds"):
        task(timeout=timeout)(tasks.mark)


def test_check_reports_a_missing_executor_app(executor_options, settings) -> None:
    backend = task_backends["default"]
    assert isinstance(backend, ExecutorBackend)
    assert list(backend.check()) == []
    without = [app for app in settings.INSTALLED_APPS if not app.startswith("executor")]
    with override_settings(INSTALLED_APPS=without):
        messages = list(backend.check())
    assert [(m.id, m.level) for m in messages] == [("executor.E010", ERROR)]
    assert str(messages[0]).startswith(
        "TASKS['default']: (executor.E010) ExecutorBackend needs the executor app"
    )
    assert 'Add "executor.apps.ExecutorConfig" (or "executor") to INSTALLED_APPS' in str(
        messages[0].hint
    )


@pytest.mark.slow  # starts manage.py
def test_manage_py_check_names_the_missing_executor_app(tmp_path) -> None:
    """A deployment that leaves the app out: ``check`` (and so migrate, run_executor) stops
    on executor.E010. (Before, the backend's module failed to import: a RuntimeError.)"""
    (tmp_path / "without_executor.py").write_text(
        "from grace.settings import *  # noqa: F403\n"
        "INSTALLED_APPS = [a for a in INSTALLED_APPS if not a.startswith('executor')]  # noqa\n"
    )
    env = project_env(tmp_path, {"DJANGO_SETTINGS_MODULE": "without_executor",
                                 "PYTHONPATH": str(tmp_path)})
    done = subprocess.run([sys.executable, str(ROOT / "manage.py"), "check"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TASKS['default']: (executor.E010) ExecutorBackend needs the executor app" in (
        done.stderr
    )
    assert "HINT: Add \"executor.apps.ExecutorConfig\" (or \"executor\")" in done.stderr
    assert "Traceback" not in done.stderr
