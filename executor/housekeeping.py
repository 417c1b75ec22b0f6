"""A worker's periodic database chores: cancel requests, lease renewal, reclaiming the
tasks of dead workers, pruning old finished tasks."""

from __future__ import annotations

import logging
import random
import time

from django.db import close_old_connections

from executor.backend import ExecutorBackend
from executor.db import with_retries
from executor.selectors import cancel_requested_sequences
from executor.services import task_heartbeat, task_prune, task_reclaim_stale

logger = logging.getLogger("executor")

TICK_SECONDS = 1.0  # cancel requests are noticed within this
PRUNE_EVERY = 200  # finished tasks between two prunes (and at least once a tick)


class Housekeeping:
    """The chores of one worker; ``tick`` runs those that are due, ``prune`` the pruning."""

    def __init__(self, *, worker_id: str, backend: ExecutorBackend) -> None:
        self.worker_id = worker_id
        self.backend = backend.alias
        self.options = backend.settings
        self.next_tick = 0.0
        self.next_heartbeat = 0.0
        self.next_reclaim = 0.0  # at start-up: tasks of a worker that died before us
        self.finished = 0  # since the last prune

    def tick(self, *, holding: bool) -> set[int]:
        """Run the chores that are due; the sequences of the worker's tasks that someone
        asked to cancel. ``holding``: whether the worker holds any task now."""
        now = time.monotonic()
        if now < self.next_tick:
            return set()
        self.next_tick = now + TICK_SECONDS
        worker_id = self.worker_id
        lease = self.options.lease_seconds
        wanted: set[int] = set()
        try:
            if holding:
                wanted = cancel_requested_sequences(worker_id=worker_id)
                if now >= self.next_heartbeat:
                    self.next_heartbeat = now + lease / 3
                    with_retries(
                        lambda: task_heartbeat(worker_id=worker_id, lease_seconds=lease),
                        what="heartbeat",
                    )
            if now >= self.next_reclaim:
                self.next_reclaim = now + lease / 2 * random.uniform(0.8, 1.2)
                with_retries(lambda: task_reclaim_stale(worker_id=worker_id), what="reclaim")
            self.prune(force=True)
        except Exception:
            logger.exception("housekeeping failed; trying again in %ss", TICK_SECONDS)
            close_old_connections()
        return wanted

    def prune(self, *, force: bool) -> None:
        """Keep the newest ``retain_finished`` finished tasks (every PRUNE_EVERY, or forced)."""
        if not self.finished or (self.finished < PRUNE_EVERY and not force):
            return
        self.finished = 0
        try:
            while task_prune(backend=self.backend, retain=self.options.retain_finished):
                pass
        except Exception:
            logger.exception("pruning finished tasks failed")
            close_old_connections()
