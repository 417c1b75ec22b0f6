"""The chat app's entries of /api/health (registered from ``ChatConfig.ready()``).

``model_backend``: the primary reply backend, whether it can answer and its circuit.
Also "ok" when the model is down: the fallback answers (replies are ``degraded``), so a
model outage must not take the web servers out of a load balancer.
"""

from __future__ import annotations

from typing import Any

from chat.backends import reply_backend_primary
from chat.backends.breaker import breaker_get
from chat.conf import chat_settings


def model_backend_health() -> dict[str, Any]:
    backend = reply_backend_primary()
    available = backend.available()
    circuit = breaker_get(backend.alias).state
    result: dict[str, Any] = {
        "status": "ok", "backend": backend.alias, "available": available, "circuit": circuit,
        "fallback": chat_settings.REPLY_FALLBACK,
    }
    if not available or circuit != "closed":
        result["warning"] = "the model cannot answer now: replies come from the fallback"
    return result
