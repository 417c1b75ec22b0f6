"""The child processes of a worker: each runs one task attempt at a time.

Every attempt runs in a child process, so the worker can stop any of them: a task that
overruns its timeout (sync code included, which no thread can interrupt) has its child
killed and replaced, and the worker itself never blocks on task code. Children are forked
from the worker, so they start warm (Django set up, modules imported) in milliseconds, and
they are reused from task to task: the cost of a process is paid on start and after a kill,
never per task.

Protocol over a ``multiprocessing`` pipe: the worker sends a ``Job`` dict, the child answers
``(sequence, ok, return_value, error)``; ``None`` asks the child to exit.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys
import traceback
from collections.abc import Iterable
from inspect import iscoroutinefunction
from multiprocessing.connection import Connection
from typing import Any

from django.db import close_old_connections

from executor.backend import ExecutorTaskContext
from executor.compat import Task, TaskResult, TaskResultStatus, get_module_path, normalize_json
from executor.results import task_resolve
from grace.request_id import request_id_reset, request_id_set

logger = logging.getLogger("executor")

Job = dict[str, Any]
Reply = tuple[int, bool | None, Any, dict[str, Any] | None]


def error_dict(exc: BaseException) -> dict[str, Any]:
    return {
        "exception_class_path": get_module_path(type(exc)),
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _die_with_parent() -> None:
    """Ask Linux to kill this child when its worker dies (kill -9 included): no orphans."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


WORKER_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals the worker handles (drain, then abort). Sent to the whole process group
(Ctrl-C in a terminal, ``kill -TERM -PGID``, systemd's ``KillMode=control-group``) they
reach the children too, which leave them to the worker."""


def _signal_left_to_worker(signum: int, frame: Any) -> None:
    """A child's handler of ``WORKER_SIGNALS``: nothing; the worker decides for its tasks."""


def signals_leave_to_worker() -> None:
    """A child outlives the signals its worker handles: the running task finishes, within
    the worker's grace period, and the worker kills the child (SIGKILL) when it must.

    A handler that does nothing rather than ``SIG_IGN``: a handler is reset by ``exec``, so
    the programs a task starts get the default dispositions back (``Popen.terminate()``
    stops them), where an ignored signal would stay ignored in them.
    """
    for signum in WORKER_SIGNALS:
        signal.signal(signum, _signal_left_to_worker)
    signal.set_wakeup_fd(-1)  # the worker's wakeup pipe, inherited: its signals, not ours


def _context_for(job: Job, task: Task, cancel_flag: Any) -> ExecutorTaskContext:
    result: TaskResult = TaskResult(
        task=task,
        id=job["id"],
        status=TaskResultStatus.RUNNING,
        enqueued_at=job["enqueued_at"],
        started_at=job["started_at"],
        last_attempted_at=job["last_attempted_at"],
        finished_at=None,
        args=job["args"],
        kwargs=job["kwargs"],
        backend=job["backend_name"],
        errors=[],
        worker_ids=job["worker_ids"],
    )
    return ExecutorTaskContext(
        task_result=result, cancel_flag=cancel_flag, sequence=job["sequence"]
    )


def job_run(
    job: Job, *, cancel_flag: Any, drain_flag: Any, loop: asyncio.AbstractEventLoop
) -> Reply:
    """Run one attempt here and now; never raises (the error is in the reply).

    ``ok`` is ``None`` when the worker is draining: the job was not started.
    """
    if drain_flag.value:
        return (job["sequence"], None, None, None)

    token = request_id_set(job["request_id"] or None)
    close_old_connections()
    # Logged here, as the attempt really begins (the worker may have queued it behind another).
    logger.info(
        "task %s started", job["id"],
        extra={"task_id": job["id"], "task": job["task_path"], "queue": job["queue_name"],
               "status": "RUNNING", "attempt": job["attempt"], "worker_id": job["worker_id"]},
    )
    try:
        task = task_resolve(job["task_path"])
        args = list(job["args"])
        if task.takes_context:
            args.insert(0, _context_for(job, task, cancel_flag))
        if iscoroutinefunction(task.func):
            value = loop.run_until_complete(task.func(*args, **job["kwargs"]))
        else:
            value = task.func(*args, **job["kwargs"])
        return (job["sequence"], True, normalize_json(value), None)
    except BaseException as exc:  # noqa: BLE001 - a task's SystemExit is its failure too
        return (job["sequence"], False, None, error_dict(exc))
    finally:
        close_old_connections()
        request_id_reset(token)


def child_main(
    conn: Connection, cancel_flag: Any, drain_flag: Any, inherited: Iterable[Connection]
) -> None:
    """Entry point of a child: serve jobs until told to stop or the worker goes away."""
    _die_with_parent()
    signals_leave_to_worker()
    for other in inherited:
        other.close()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        reply = job_run(job, cancel_flag=cancel_flag, drain_flag=drain_flag, loop=loop)
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
        except Exception as exc:  # an unpicklable value after all: report it as the error
            conn.send((reply[0], False, None, error_dict(exc)))
