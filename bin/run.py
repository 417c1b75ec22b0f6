#!/usr/bin/env python3
"""Serve Grace: daphne and one ``run_executor`` worker, started and stopped together.

    python bin/run.py [--host 127.0.0.1] [--port 8000]

Ctrl-C or SIGTERM stops both: each gets one SIGTERM (the worker drains: running tasks
finish within GRACE_EXECUTOR_SHUTDOWN_GRACE_SECONDS, unstarted ones go back to the queue);
a second Ctrl-C forwards a second SIGTERM (the worker aborts, giving its tasks back) and
kills the server. When either process exits on its own, the other is stopped as well and
this script exits with the first one's code. ``make run`` uses it.

Once daphne accepts connections, it prints to stdout where the chat, the admin and the API
docs are, and the next step.

Both run on jemalloc when it is installed (``GRACE_MALLOC``, see grace/allocator.py).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grace.allocator import AllocatorError, preload_vars  # noqa: E402


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if this script dies (even by kill -9)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A session of its own: the terminal's Ctrl-C reaches this script only, which then
    # signals each process exactly once (a second signal would make the worker abort).
    return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command, cwd=ROOT, env=env, start_new_session=True, preexec_fn=_die_with_parent
    )


def accepts_connections(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (a wildcard host: on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def welcome(host: str, port: int) -> str:
    """What to open and what to do next, once the server is up."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    base = f"http://{shown}:{port}"
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    return (
        f"Grace is running.\n"
        f"  Chat:     {base}/\n"
        f"  Admin:    {base}/admin/\n"
        f"  API docs: {base}/api/docs\n"
        f"Next: {python} manage.py createsuperuser  (then the first steps in README.md)\n"
        f"Stop with Ctrl-C.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the server and one executor worker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    python = sys.executable
    try:
        env = {**os.environ, **preload_vars()}
    except AllocatorError as exc:
        sys.stderr.write(f"bin/run.py: {exc}\n")
        return 2
    procs = {
        "worker": start([python, str(ROOT / "manage.py"), "run_executor"], env),
        "server": start([python, "-m", "daphne", "-b", args.host, "-p", str(args.port),
                         "grace.asgi:application"], env),
    }
    signals_seen = 0
    announced = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        for name, proc in procs.items():
            if proc.poll() is None:
                if signals_seen > 1 and name == "server":
                    proc.kill()
                else:
                    proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    first_code: int | None = None
    while any(proc.poll() is None for proc in procs.values()):
        for proc in procs.values():
            code = proc.poll()
            if code is not None and first_code is None:
                first_code = code
                if not signals_seen:  # one of them stopped on its own: stop the other
                    on_signal(signal.SIGTERM, None)
                    signals_seen = 0
        if not announced and first_code is None and procs["server"].poll() is None:
            announced = accepts_connections(args.host, args.port)
            if announced:
                sys.stdout.write(welcome(args.host, args.port))
                sys.stdout.flush()
        time.sleep(0.1)
    if signals_seen:  # asked to stop: the worker says whether it drained (0) or aborted
        return max(0, procs["worker"].returncode)
    return int(first_code or 0)

if __name__ == "__main__":
    sys.exit(main())
