"""The signals the executor sends: the Tasks API's own (``django_tasks.signals``).

- ``task_enqueued``: in the process that enqueued, once the row is written; inside the
  caller's transaction when there is one (a receiver that needs the row committed defers
  its work with ``transaction.on_commit``).
- ``task_started``: in the worker process (``run_executor``), as each attempt starts.
- ``task_finished``: once a task is finished: SUCCESSFUL, FAILED, or CANCELLED (which reads
  as FAILED). Sent by the worker that ran it, by the worker that reclaimed it from a lost
  worker and failed or cancelled it, or by the process that cancelled it before it ran. A
  failed attempt that will be retried sends none. Sent after the write that finished it.

Each has ``sender`` the backend class and ``task_result`` a ``TaskResult``. While it is
sent, the request ID of the request that enqueued the task is bound
(``grace.request_id.request_id_get()``; ``None`` for a task enqueued outside a request),
so a receiver needs no database read to find it. A receiver that raises is logged and does
not stop the other receivers, nor the work that sent the signal. A task whose path no
longer imports sends no signal after its enqueue (the failure is logged).
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from executor.compat import TaskResult, task_backends, task_enqueued, task_finished, task_started
from executor.models import TaskRecord
from executor.results import task_result_from_record
from grace.request_id import request_id_reset, request_id_set

logger = logging.getLogger("executor")

NAMES = {task_enqueued: "task_enqueued", task_started: "task_started",
         task_finished: "task_finished"}


def task_signal_send(
    signal: Signal, record: TaskRecord, *, sender: type[Any] | None = None,
    task_result: TaskResult | None = None,
) -> None:
    """Send ``signal`` for one task with its request ID bound; never raises.

    ``sender`` defaults to the class of the record's backend, ``task_result`` to the
    record's ``TaskResult``.
    """
    if not signal.receivers:
        return
    name = NAMES.get(signal, "a task signal")
    token = request_id_set(record.request_id or None)
    try:
        result = task_result or task_result_from_record(record)
        if sender is None:
            sender = type(task_backends[record.backend_name])
        responses = signal.send_robust(sender, task_result=result)
    except Exception:
        logger.exception("%s for task %s could not be sent", name, record.id)
        return
    finally:
        request_id_reset(token)
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error("a receiver of %s (%s) failed for task %s", name,
                         getattr(receiver, "__qualname__", receiver), record.id,
                         exc_info=response)
