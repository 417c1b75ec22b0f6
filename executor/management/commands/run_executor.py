"""``manage.py run_executor [--queue Q ...] [--concurrency N] [--batch B]``: run a worker."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from executor.backend import ExecutorBackend
from executor.compat import InvalidTaskBackendError, task_backends
from executor.conf import (
    BATCH_MAX,
    CONCURRENCY_MAX,
    POLL_INTERVAL_MAX,
    POLL_INTERVAL_MIN,
    executor_settings,
)
from executor.exceptions import InvalidExecutorOptions
from executor.worker import WORKER_ID_MAX, Worker, worker_id_problem

logger = logging.getLogger("executor")


def _bounded_int(low: int, high: int) -> Any:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def _seconds(low: float, high: float) -> Any:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
        if not math.isfinite(value):  # inf would never claim again; NaN compares false
            raise argparse.ArgumentTypeError(f"{raw!r} is not a finite number of seconds")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value:g} is not between {low:g} and {high:g}")
        return value

    return parse


def _worker_id(raw: str) -> str:
    problem = worker_id_problem(raw)
    if problem:
        raise argparse.ArgumentTypeError(f"{raw!r} {problem}")
    return raw


class Command(BaseCommand):
    help = (
        "Run an executor worker: claim tasks from the queue in batches and run up to "
        "--concurrency of them at a time, each in a child process. SIGTERM/SIGINT drains; "
        "a second signal aborts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queue", action="append", dest="queues", metavar="Q",
            help="A queue to run (repeat for several; default: every queue of the backend).",
        )
        parser.add_argument(
            "--concurrency", type=_bounded_int(1, CONCURRENCY_MAX), default=None, metavar="N",
            help="Tasks run at a time, a child process each (default GRACE_EXECUTOR_CONCURRENCY).",
        )
        parser.add_argument(
            "--batch", type=_bounded_int(1, BATCH_MAX), default=None, metavar="B",
            help="Tasks claimed per transaction (default GRACE_EXECUTOR_BATCH).",
        )
        parser.add_argument(
            "--interval", type=_seconds(POLL_INTERVAL_MIN, POLL_INTERVAL_MAX), default=None,
            metavar="SECONDS",
            help=f"Pause between polls of an empty queue, {POLL_INTERVAL_MIN:g} to "
            f"{POLL_INTERVAL_MAX:g} (default GRACE_EXECUTOR_POLL_INTERVAL).",
        )
        parser.add_argument("--backend", default="default", help="The TASKS alias to run.")
        parser.add_argument(
            "--burst", action="store_true",
            help="Exit (0) once the queues hold no READY task, deferred ones included.",
        )
        parser.add_argument(
            "--worker-id", type=_worker_id, default=None, metavar="ID",
            help=f"This worker's name on the tasks it claims, unique among the workers, 1 to "
            f"{WORKER_ID_MAX} printable characters (default: host:pid:random).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["backend"]
        try:
            backend = task_backends[alias]
        except InvalidTaskBackendError as exc:
            raise CommandError(f"--backend {alias}: {exc}") from None
        if not isinstance(backend, ExecutorBackend):
            raise CommandError(
                f"TASKS[{alias!r}] uses {type(backend).__name__}, not "
                "executor.backend.ExecutorBackend: there is nothing for a worker to run."
            )
        queues = options["queues"] or None
        unknown = sorted(set(queues or []) - backend.queues)
        if unknown:
            raise CommandError(
                f"--queue {', '.join(unknown)}: not a queue of TASKS[{alias!r}] "
                f"(its queues: {', '.join(sorted(backend.queues))})."
            )
        try:
            worker = Worker(
                backend=alias,
                queues=queues,
                concurrency=options["concurrency"] or executor_settings.CONCURRENCY,
                batch=options["batch"] or executor_settings.BATCH,
                interval=options["interval"] or executor_settings.POLL_INTERVAL,
                burst=options["burst"],
                worker_id=options["worker_id"],
            )
        except InvalidExecutorOptions as exc:
            raise CommandError(str(exc)) from None
        worker.install_signals()
        code = worker.run()
        if code:
            sys.exit(code)
