"""A real ``run_executor`` draining after SIGTERM: it waits for its tasks, it does not spin."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from executor.models import Status, TaskRecord
from tests.executor import tasks
from tests.executor.conftest import wait_until

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
