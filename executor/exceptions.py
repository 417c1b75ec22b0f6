"""Exceptions of the executor (Channels style: one line and a docstring each)."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from executor.compat import TaskException


class ExecutorException(TaskException):
    """Base class of the executor's exceptions. Do not raise directly."""


class QueueFull(ExecutorException):  # noqa: N818 - named like Django's own
    """Enqueue refused: the queue already holds ``max_pending`` READY tasks; nothing was written.

    ``queue_name``, ``max_pending`` and ``retry_after`` (seconds) say which bound was hit and
    when to try again; an API view that enqueues answers 503 with ``Retry-After``.
    """

    def __init__(self, queue_name: str, max_pending: int, retry_after: int) -> None:
        super().__init__(
            f"Queue {queue_name!r} is full: it already holds {max_pending} pending tasks."
        )
        self.queue_name = queue_name
        self.max_pending = max_pending
        self.retry_after = retry_after


class TaskTimeout(ExecutorException):  # noqa: N818
    """An attempt ran past the task's timeout and its child process was killed."""


class TaskCancelled(ExecutorException):  # noqa: N818
    """The task was cancelled; a task may raise it after seeing ``context.cancel_requested``."""


class WorkerLost(ExecutorException):  # noqa: N818
    """The worker running an attempt died or vanished; its lease expired or its child exited."""


class InvalidExecutorOptions(ImproperlyConfigured):
    """The executor backend's ``OPTIONS`` or ``QUEUES`` in ``TASKS`` are invalid."""
