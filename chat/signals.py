"""The chat app's own signals. Receivers must not block: they run in the sender's
thread (a stage thread, or the event loop for ``reply_finished``).

- ``reply_finished(sender, owner, body)``: a reply was answered; ``owner`` is the
  ``grace.auth.Owner`` who asked, ``body`` the REST 200 body (the websocket's ``done``).
- ``security_events_recorded(sender, events)``: Hunter wrote these ``SecurityEvent``
  rows (with ``bulk_create``, which sends no ``post_save``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger(__name__)

reply_finished = Signal()
security_events_recorded = Signal()


def signal_send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal``; a receiver that raises is logged and never reaches the sender."""
    for receiver, result in signal.send_robust(sender=sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "signal receiver %r failed", receiver,
                exc_info=(type(result), result, result.__traceback__),
            )
