"""Writes on the task table, each one short transaction (HackSoft-style services).

Every state change is logged with the task id and the request ID that enqueued the task.
"""

from __future__ import annotations

from executor.services.claim import task_claim
from executor.services.common import AttemptResult, error_entry, log_state, retry_delay
from executor.services.enqueue import (
    EnqueueStatement,
    task_enqueue,
    tasks_enqueue,
    tasks_enqueue_statement,
    tasks_enqueued,
)
from executor.services.lifecycle import (
    task_complete_and_claim,
    task_heartbeat,
    task_reclaim_stale,
    task_release,
)
from executor.services.operator import task_cancel, task_prune, task_retry

__all__ = [
    "AttemptResult",
    "EnqueueStatement",
    "error_entry",
    "log_state",
    "retry_delay",
    "task_cancel",
    "task_claim",
    "task_enqueue",
    "tasks_enqueue",
    "tasks_enqueue_statement",
    "tasks_enqueued",
    "task_complete_and_claim",
    "task_heartbeat",
    "task_prune",
    "task_reclaim_stale",
    "task_release",
    "task_retry",
]
