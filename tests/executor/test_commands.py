from __future__ import annotations

import re

import pytest
from django.core.management import CommandError, call_command

from executor.conf import EXECUTOR_SPECS
from executor.exceptions import InvalidExecutorOptions
from executor.models import TaskRecord
from executor.worker import WORKER_ID_MAX, Worker
from grace.conf import settings_read


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "0 is not between 1 and 256"),
        (["--concurrency", "many"], "'many' is not a whole number"),
        (["--concurrency", "1" + "0" * 30], "is not between 1 and 256"),
        (["--batch", "5000"], "5000 is not between 1 and 1000"),
        (["--batch", "0"], "0 is not between 1 and 1000"),
        (["--queue", "nope"], "--queue nope: not a queue of TASKS['default']"),
        (["--queue", ""], "--queue : not a queue of TASKS['default']"),
        (["--backend", "missing"], "--backend missing"),
        # An infinite interval was accepted: the worker never looked at the queue again.
        (["--interval", "inf"], "argument --interval: 'inf' is not a finite number of seconds"),
        (["--interval", "1e400"], "'1e400' is not a finite number of seconds"),
        (["--interval", "nan"], "'nan' is not a finite number of seconds"),
        (["--interval", "-1"], "-1 is not between 0.01 and 3600"),
        (["--interval", "0"], "0 is not between 0.01 and 3600"),
        (["--interval", "86400"], "86400 is not between 0.01 and 3600"),
        (["--interval", "soon"], "'soon' is not a number"),
        # Longer than the column: every claim failed on PostgreSQL, forever (SQLite kept it).
        (["--worker-id", "w" * 65],
         "argument --worker-id: '" + "w" * 65 + "' is 65 characters long: at most 64 fit in "
         "the task table's worker_id column"),
        # Empty or blank: silently replaced by a generated id.
        (["--worker-id", ""], "argument --worker-id: '' must not be empty"),
        (["--worker-id", "   "], "'   ' must not be empty"),
        (["--worker-id", " w1"], "must be printable, without leading or trailing spaces"),
        (["--worker-id", "w\n1"], "must be printable, without leading or trailing spaces"),
    ],
)
def test_bad_arguments_give_a_clear_error(executor_options, args, message) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("run_executor", *args)


def test_the_worker_id_limit_is_the_column(executor_options) -> None:
    assert WORKER_ID_MAX == TaskRecord._meta.get_field("worker_id").max_length == 64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"worker_id": ""}, "worker_id '' must not be empty"),
        ({"worker_id": "x" * 65}, "at most 64"),
        ({"interval": float("inf")}, "interval must be a finite number of seconds > 0"),
        ({"interval": float("nan")}, "interval must be a finite number of seconds > 0"),
        ({"concurrency": 0}, "at least 1"),
    ],
)
def test_a_worker_built_in_code_refuses_the_same_values(executor_options, kwargs, message):
    with pytest.raises(InvalidExecutorOptions, match=re.escape(message)):
        Worker(**kwargs)


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("GRACE_EXECUTOR_POLL_INTERVAL", "inf", "'inf' must be at most 3600."),
        ("GRACE_EXECUTOR_POLL_INTERVAL", "nan", "'nan' is not a number."),
        ("GRACE_EXECUTOR_POLL_INTERVAL", "0", "'0' must be at least 0.01."),
        ("GRACE_EXECUTOR_CONCURRENCY", "100000", "'100000' must be at most 256."),
        ("GRACE_EXECUTOR_BATCH", "1000000", "'1000000' must be at most 1000."),
    ],
)
def test_the_worker_settings_refuse_what_the_arguments_refuse(variable, raw, message) -> None:
    _, problems = settings_read(EXECUTOR_SPECS, {variable: raw})
    assert problems == [f"{variable}={message}"]


def test_a_backend_that_is_not_the_executor_is_refused(settings) -> None:
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    with pytest.raises(CommandError, match="not executor.backend.ExecutorBackend"):
        call_command("run_executor", "--burst")


@pytest.mark.slow  # the worker starts its child processes
@pytest.mark.django_db(transaction=True)
def test_burst_runs_the_queue_and_returns(executor_options, tmp_path) -> None:
    from tests.executor import tasks

    log = str(tmp_path / "runs")
    tasks.record.enqueue(log, "one")
    call_command("run_executor", "--burst", "--concurrency", "1", "--interval", "0.05")
    assert tasks.marks(log) == ["one"]


@pytest.mark.slow  # the worker starts its child processes
@pytest.mark.django_db(transaction=True)
def test_a_worker_id_of_the_longest_length_claims_and_runs(executor_options, tmp_path) -> None:
    """64 characters fit the column on both engines: the task runs and names the worker."""
    from tests.executor import tasks

    worker_id = "w" * (WORKER_ID_MAX - 1) + "é"
    result = tasks.record.enqueue(str(tmp_path / "runs"), "one")
    call_command("run_executor", "--burst", "--concurrency", "1", "--interval", "0.05",
                 "--worker-id", worker_id)
    row = TaskRecord.objects.get(id=result.id)
    assert (row.status, row.worker_ids) == ("SUCCESSFUL", [worker_id])
