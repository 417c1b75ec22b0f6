"""The one place in the executor that names the Tasks API package.

Django 6 ships it as ``django.tasks``; on Django 5.2 it is the ``django-tasks`` backport.
Moving the executor to Django 6 means changing the package named below and nothing else:
the executor imports ``task``, ``Task``, ``TaskResult``... from here.
"""

from __future__ import annotations

from django_tasks import TaskResultStatus, task, task_backends
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import (
    DEFAULT_TASK_PRIORITY,
    DEFAULT_TASK_QUEUE_NAME,
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
)
from django_tasks.exceptions import (
    InvalidTaskBackendError,
    InvalidTaskError,
    TaskException,
    TaskResultDoesNotExist,
)
from django_tasks.signals import task_enqueued, task_finished, task_started
from django_tasks.utils import get_module_path, normalize_json

__all__ = [
    "DEFAULT_TASK_PRIORITY",
    "DEFAULT_TASK_QUEUE_NAME",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "BaseTaskBackend",
    "InvalidTaskBackendError",
    "InvalidTaskError",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskException",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "get_module_path",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
