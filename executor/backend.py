"""``ExecutorBackend``: the Tasks API backend over the executor's task table.

Configure it in ``TASKS`` (see docs/executor.md) and use the Tasks API as usual::

    from executor.compat import task

    @task(priority=10, timeout=30, max_attempts=3)
    def capture(message_id: str) -> None: ...

    capture.enqueue(message_id)     # may raise executor.exceptions.QueueFull

``timeout`` and ``max_attempts`` are this backend's keywords: the Tasks API passes extra
decorator keywords to the backend's ``task_class``, ``ExecutorTask``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.apps import apps
from django.core.checks import CheckMessage, Error
from django.utils.version import PY311
from typing_extensions import ParamSpec

from executor.compat import (
    BaseTaskBackend,
    InvalidTaskError,
    Task,
    TaskContext,
    TaskResult,
    TaskResultDoesNotExist,
    task_enqueued,
)
from executor.conf import SECONDS_MAX, ExecutorOptions, options_problems, task_timeout_valid
from executor.exceptions import InvalidExecutorOptions, TaskCancelled
from grace.request_id import request_id_get

# The models (and what uses them) are imported where used, not here: TASKS loads this
# module even when the executor app is not installed, and ``check`` must then say so
# (executor.E010) rather than the import fail with a RuntimeError.

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True, slots=PY311, kw_only=True)  # type: ignore[literal-required]
class ExecutorTask(Task[P, T]):
    """A task with the executor's per-task options (``None``: the backend's OPTIONS)."""

    timeout: float | None = None
    """Seconds an attempt may run before its process is killed and the attempt fails."""

    max_attempts: int | None = None
    """Attempts in all (1: no retry); failures are retried with exponential backoff."""


@dataclass(frozen=True, slots=PY311, kw_only=True)  # type: ignore[literal-required]
class ExecutorTaskContext(TaskContext):
    """The context a ``takes_context`` task receives: ``attempt`` and the cancel request."""

    cancel_flag: Any = field(default=None, repr=False, compare=False)
    sequence: int = 0

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked this task to stop (it is then recorded as CANCELLED).

        Noticed by the worker within about a second of the request; cheap to read often.
        """
        return self.cancel_flag is not None and self.cancel_flag.value == self.sequence

    def raise_if_cancelled(self) -> None:
        if self.cancel_requested:
            raise TaskCancelled(f"task {self.task_result.id} was cancelled")


class ExecutorBackend(BaseTaskBackend):
    """Bounded, persistent priority queue; ``manage.py run_executor`` runs its tasks."""

    task_class = ExecutorTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        params = {"QUEUES": ["default"], **params}
        # Reported by the system checks (executor/checks.py); enqueue refuses meanwhile.
        self.problems = options_problems(alias, params)
        super().__init__(alias, params)
        self._settings = None if self.problems else ExecutorOptions.from_options(self.options)

    @property
    def settings(self) -> ExecutorOptions:
        """The resolved OPTIONS; raises ``InvalidExecutorOptions`` if they are invalid."""
        if self._settings is None:
            check_id, message = self.problems[0]
            raise InvalidExecutorOptions(f"{message} ({check_id})")
        return self._settings

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        timeout = getattr(task, "timeout", None)
        if timeout is not None and not task_timeout_valid(timeout):
            raise InvalidTaskError(
                f"timeout must be a finite number of seconds > 0 and <= {SECONDS_MAX:g} "
                f"(a week), not {timeout!r}."
            )
        attempts = getattr(task, "max_attempts", None)
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100
        ):
            raise InvalidTaskError(f"max_attempts must be a whole number 1..100, not {attempts!r}.")

    def check(self, **kwargs: Any) -> Iterable[CheckMessage]:
        """Django's system checks (``django_tasks`` runs them for every backend): without the
        ``executor`` app its table, its checks of OPTIONS and its worker are all missing."""
        yield from super().check(**kwargs)
        if not apps.is_installed("executor"):
            yield Error(
                f"{type(self).__name__} needs the executor app, which is not installed: "
                "without it there is no task table and no run_executor.",
                hint='Add "executor.apps.ExecutorConfig" (or "executor") to INSTALLED_APPS '
                "and run migrate.",
                obj=f"TASKS[{self.alias!r}]",
                id="executor.E010",
            )

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        return self._enqueue([(task, args, kwargs)])[0]

    def enqueue_many(
        self, calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]]
    ) -> list[TaskResult]:
        """Enqueue several tasks of this backend at once, all or none: ``QueueFull``, having
        written nothing, unless each queue has room for all of its tasks. The tasks of one
        queue go in with one statement (one room check, one round trip), so a caller that
        enqueues several tasks in its transaction holds the queue's lock for one statement
        (``chat``'s follow-up tasks, say). Not part of the Tasks API: a caller checks
        ``hasattr(backend, "enqueue_many")`` and enqueues one by one otherwise."""
        self._validate(calls)
        return self._enqueue(calls)

    def enqueue_many_statement(
        self, calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]]
    ) -> PreparedEnqueue | None:
        """``enqueue_many`` as one SQL statement for the caller to run in its own write
        transaction: ``prepared.sql`` with ``prepared.params``, then
        ``prepared.finish(rows)`` with the rows it returned (the results; ``QueueFull``
        when it wrote nothing). For a caller that sends its transaction's statements at
        once (``chat``'s store on PostgreSQL). None where there is no such one statement
        (tasks of several queues; a database without ``RETURNING``): enqueue as usual."""
        from executor.services import tasks_enqueue_statement

        self._validate(calls)
        statement = tasks_enqueue_statement(
            backend=self.alias, options=self.settings, calls=calls, request_id=request_id_get(),
        )
        if statement is None:
            return None
        return PreparedEnqueue(self, calls, statement)

    def _validate(self, calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]]) -> None:
        for task, _, _ in calls:
            if task.backend != self.alias:
                raise InvalidTaskError(
                    f"{task.name} is a task of backend {task.backend!r}, not {self.alias!r}."
                )
            self.validate_task(task)

    def _enqueue(
        self, calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]]
    ) -> list[TaskResult]:
        from executor.services import tasks_enqueue

        records = tasks_enqueue(
            backend=self.alias, options=self.settings, calls=calls, request_id=request_id_get(),
        )
        return self._enqueued(calls, records)

    def _enqueued(
        self, calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]], records: Sequence[Any]
    ) -> list[TaskResult]:
        """The results of tasks written, each announced with ``task_enqueued``."""
        from executor.results import task_result_from_record
        from executor.signals import task_signal_send

        results = []
        for record, (task, _, _) in zip(records, calls, strict=True):
            result = task_result_from_record(record, task=task)
            task_signal_send(task_enqueued, record, sender=type(self), task_result=result)
            results.append(result)
        return results

    def get_result(self, result_id: str) -> TaskResult:
        from executor.models import TaskRecord
        from executor.results import task_result_from_record

        record = TaskRecord.objects.filter(id=str(result_id), backend_name=self.alias).first()
        if record is None:
            raise TaskResultDoesNotExist(result_id)
        return task_result_from_record(record)


@dataclass
class PreparedEnqueue:
    """Tasks to enqueue with one statement of the caller's own
    (``ExecutorBackend.enqueue_many_statement``): run ``sql`` with ``params``, then
    ``finish`` with the rows it returned."""

    backend: ExecutorBackend = field(repr=False)
    calls: Sequence[tuple[Task, Sequence[Any], dict[str, Any]]] = field(repr=False)
    statement: Any = field(repr=False)
    """The services' ``EnqueueStatement``."""

    @property
    def sql(self) -> str:
        return str(self.statement.sql)

    @property
    def params(self) -> list[Any]:
        return list(self.statement.params)

    def finish(self, rows: Sequence[Sequence[Any]]) -> list[TaskResult]:
        """The results, given the rows the statement returned once its transaction
        committed; ``QueueFull`` when it wrote nothing (no room for all of them)."""
        from executor.services import tasks_enqueued

        records = tasks_enqueued(self.statement, rows)
        return self.backend._enqueued(self.calls, records)
