"""The signals the executor sends: the Tasks API's own, so existing receivers work.

``task_enqueued`` (in the process that enqueued), ``task_started`` and ``task_finished``
(in the worker process, ``run_executor``), each with ``sender`` the backend class and
``task_result`` a ``TaskResult``. ``task_finished`` is sent once a task is finished
(SUCCESSFUL, FAILED, or CANCELLED which reads as FAILED); a failed attempt that will be
retried sends no ``task_finished``.
"""

from __future__ import annotations

from executor.compat import task_enqueued, task_finished, task_started

__all__ = ["task_enqueued", "task_finished", "task_started"]
