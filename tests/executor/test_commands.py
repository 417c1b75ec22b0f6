from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "0 is not between 1 and 256"),
        (["--concurrency", "many"], "'many' is not a whole number"),
        (["--batch", "5000"], "5000 is not between 1 and 1000"),
        (["--queue", "nope"], "--queue nope: not a queue of TASKS['default']"),
        (["--backend", "missing"], "--backend missing"),
    ],
)
def test_bad_arguments_give_a_clear_error(executor_options, args, message) -> None:
    with pytest.raises(CommandError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call_command("run_executor", *args)


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
