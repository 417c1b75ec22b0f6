"""The chat app's entries of /api/health (registered from ``ChatConfig.ready()``).

``model_backend``: the primary reply backend, whether it can answer and its circuit.
Also "ok" when the model is down: the fallback answers (replies are ``degraded``), so a
model outage must not take the web servers out of a load balancer.

``available`` is what this process knows, without calling the model: False when the
backend cannot answer at all (not configured, no package or model file) or when its last
call failed (timed out or errored; the circuit need not be open yet). The outcome of the
recent calls comes from ``chat.backends.usage`` (``last_call``: status, seconds ago, how
many failed in a row); a health check never calls the model, so a load balancer polling
every second adds no load to it. A call that succeeds makes it available again.
"""

from __future__ import annotations

import time
from typing import Any

from chat.backends import reply_backend_primary
from chat.backends.breaker import breaker_get
from chat.backends.usage import usage_snapshot
from chat.conf import chat_settings


def model_backend_health() -> dict[str, Any]:
    backend = reply_backend_primary()
    configured = backend.available()
    circuit = breaker_get(backend.alias).state
    last = (usage_snapshot().get(backend.alias) or {}).get("last")
    failures = int(last["failures"]) if last else 0
    available = configured and not failures and circuit != "open"
    result: dict[str, Any] = {
        "status": "ok",
        "backend": backend.alias,
        "available": available,
        "circuit": circuit,
        "fallback": chat_settings.REPLY_FALLBACK,
    }
    if last:
        result["last_call"] = {
            "status": last["status"],
            "seconds_ago": round(max(0.0, time.time() - last["at"]), 1),
            "failures_in_a_row": failures,
        }
    if not configured:
        result["warning"] = "the model cannot answer: replies come from the fallback"
    elif failures:
        call = result["last_call"]
        result["warning"] = (
            f"the model's last {failures} call(s) failed (the last: {call['status']}, "
            f"{call['seconds_ago']}s ago): the fallback answers while it fails"
        )
    elif circuit != "closed":
        result["warning"] = "the model's circuit is open: replies come from the fallback"
    return result
