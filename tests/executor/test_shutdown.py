"""A real ``run_executor`` draining after SIGTERM: it waits for its tasks, it does not spin,
and a signal to its whole process group drains exactly like one to the worker alone."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from executor.models import Status, TaskRecord
from tests.executor import tasks
from tests.executor.conftest import children_of, running, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_draining_worker_waits_without_spinning(
    executor_options, worker_process, tmp_path
) -> None:
    log = str(tmp_path / "runs")
    result = tasks.sleep_record.enqueue(log, "A", 3.0)
    worker = worker_process()
    wait_until(lambda: "start A" in tasks.marks(log))
    before, started = cpu_seconds(worker.pid), time.monotonic()
    worker.signal(signal.SIGTERM)
    wait_until(lambda: "end A" in tasks.marks(log))
    used, waited = cpu_seconds(worker.pid) - before, time.monotonic() - started
    assert worker.wait(30) == 0
    assert TaskRecord.objects.get(id=result.id).status == Status.SUCCESSFUL
    # A loop that spins on the signal's wakeup byte burns a core for the whole drain; a
    # waiting one uses a few milliseconds.
    assert waited > 1.0
    assert used < 0.25 * waited, f"{used:.2f}s of CPU in {waited:.2f}s of draining"


def send(worker, how: str, signum: int) -> None:
    """SIGTERM to the worker alone, or to its whole process group (its children too)."""
    if how == "group":
        worker.signal_group(signum)
    else:
        worker.signal(signum)


@pytest.mark.parametrize("how", ["worker", "group"])
def test_sigterm_to_the_process_group_drains_like_sigterm_to_the_worker(
    executor_options, worker_process, tmp_path, how
) -> None:
    """systemd (``KillMode=control-group``) and ``kill -TERM -PGID`` signal every process
    of the group: the running task still finishes, within the grace period."""
    log = str(tmp_path / "runs")
    result = tasks.sleep_record.enqueue(log, "A", 2.0)
    worker = worker_process(session=True)
    wait_until(lambda: "start A" in tasks.marks(log))
    assert TaskRecord.objects.get(id=result.id).status == Status.RUNNING
    send(worker, how, signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()
    row = TaskRecord.objects.get(id=result.id)
    assert (row.status, row.attempts, row.errors) == (Status.SUCCESSFUL, 1, [])
    assert tasks.marks(log) == ["start A", "end A"]
    assert "draining" in worker.log()


@pytest.mark.parametrize("how", ["worker", "group"])
def test_past_the_grace_period_the_group_signal_ends_like_the_worker_signal(
    executor_options, worker_process, tmp_path, how
) -> None:
    """The children ignore the group's SIGTERM: the worker still stops them (SIGKILL) when
    its grace period is over, and gives the task back unattempted."""
    log = str(tmp_path / "runs")
    long = tasks.sleep_record.enqueue(log, "L", 30)
    worker = worker_process(env={"GRACE_EXECUTOR_SHUTDOWN_GRACE_SECONDS": "1"}, session=True)
    wait_until(lambda: "start L" in tasks.marks(log))
    children = children_of(worker.pid)
    assert children
    send(worker, how, signal.SIGTERM)
    assert worker.wait(15) == 0, worker.log()
    row = TaskRecord.objects.get(id=long.id)
    assert (row.status, row.attempts, row.worker_ids) == (Status.READY, 0, [])
    assert "end L" not in tasks.marks(log)
    assert not any(running(pid, at) for pid, at in children.items())


def test_a_second_group_signal_aborts(executor_options, worker_process, tmp_path) -> None:
    log = str(tmp_path / "runs")
    long = tasks.sleep_record.enqueue(log, "L", 30)
    worker = worker_process(session=True)
    wait_until(lambda: "start L" in tasks.marks(log))
    worker.signal_group(signal.SIGTERM)
    wait_until(lambda: "draining" in worker.log())
    worker.signal_group(signal.SIGINT)
    assert worker.wait(10) == 1
    assert TaskRecord.objects.get(id=long.id).status == Status.READY
    assert "aborting" in worker.log()


def test_programs_a_task_starts_still_stop_on_sigterm(
    executor_options, worker_process
) -> None:
    """The children leave SIGTERM to the worker with a handler, not SIG_IGN, which the
    programs a task runs would inherit: their ``terminate()`` would do nothing."""
    result = tasks.terminate_a_program.enqueue()
    worker = worker_process("--burst")
    assert worker.wait(30) == 0, worker.log()
    row = TaskRecord.objects.get(id=result.id)
    assert (row.status, row.return_value) == (Status.SUCCESSFUL, -signal.SIGTERM)
