"""``bin/run.py`` (what ``make run`` starts): the server and one worker, stopped together."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from grace.allocator import allocator_in_use, jemalloc_path
from tests.executor import tasks
from tests.executor.conftest import wait_until
from tests.servers import ROOT, free_port, manage, migrate, project_env

pytestmark = pytest.mark.slow


def test_server_and_worker_start_and_stop_together(tmp_path: Path) -> None:
    env = project_env(tmp_path, {"GRACE_EXECUTOR_POLL_INTERVAL": "0.1"})
    migrate(env)
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [sys.executable, str(ROOT / "bin" / "run.py"), "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: _healthy(port), timeout=60, step=0.2)
            children = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
            expected = "jemalloc" if jemalloc_path() else "system"
            assert len(children) == 2
            assert [allocator_in_use(pid) for pid in children] == [expected, expected]
            marks = tmp_path / "marks"
            manage(env, "shell", "-c", "from tests.executor.tasks import record; "
                                       f"record.enqueue({str(marks)!r}, 'from make run')")
            wait_until(lambda: tasks.marks(marks) == ["from make run"], timeout=30)
            run.send_signal(signal.SIGINT)  # Ctrl-C
            assert run.wait(30) == 0
        finally:
            if run.poll() is None:
                run.kill()
    text = log.read_text()
    assert "draining" in text and "stopped" in text  # the worker drained, once
    assert "aborting" not in text
    assert not _healthy(port)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def test_a_bad_allocator_choice_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = project_env(tmp_path, {"GRACE_MALLOC": "tcmalloc"})
    done = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "run.py"), "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "GRACE_MALLOC='tcmalloc': expected one of auto, jemalloc, system" in done.stderr
