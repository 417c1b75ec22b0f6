"""The ``faults`` entry of /api/health while GRACE_FAULTS is on."""

from __future__ import annotations

from typing import Any

from chat.conf import chat_settings
from chat.faults import faults_describe


def faults_health() -> dict[str, Any]:
    faults = chat_settings.FAULTS
    # "ok": a drill must not take the server out of its load balancer.
    return {
        "status": "ok",
        "active": bool(faults),
        "faults": faults_describe(faults),
        "warning": "GRACE_FAULTS is on: stages fail on purpose." if faults else "",
    }
