"""The operations entries of ``/api/health`` (registered with ``health_register``).

- ``channel_layer``: a message sent to a fresh channel and received back.
- ``queue``: READY/RUNNING counts and the oldest READY task's age. A queue older than
  ``GRACE_HEALTH_QUEUE_MAX_AGE`` is reported ``stale`` with a warning but stays "ok":
  replies never wait for the queue, so a stopped worker must not take the web servers
  out of a load balancer. Only an unreadable queue is an error.
- ``model_backend``: the primary reply backend, whether it can answer and its circuit.
  Also "ok" when the model is down: the fallback answers (replies are ``degraded``).
- ``operations``: the audit writer and metrics flusher of this process (pending,
  dropped, failures) and the switched-off features.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync

from grace.features import features_disabled

CHANNEL_LAYER_TIMEOUT = 1.5


def channel_layer_health() -> dict[str, Any]:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return {"status": "error", "error": "CHANNEL_LAYERS has no default layer"}

    async def round_trip() -> bool:
        import asyncio

        async with asyncio.timeout(CHANNEL_LAYER_TIMEOUT):
            channel = await layer.new_channel("health.")
            await layer.send(channel, {"type": "health.ping"})
            message = await layer.receive(channel)
            return bool(message.get("type") == "health.ping")

    ok = async_to_sync(round_trip)()
    return {"status": "ok" if ok else "error", "backend": type(layer).__name__}


def queue_health() -> dict[str, Any]:
    from executor.conf import executor_settings
    from executor.selectors import queue_figures

    figures = queue_figures()
    ready = sum(int(row["ready"]) for row in figures)
    running = sum(int(row["running"]) for row in figures)
    ages = [row["oldest_ready_age"] for row in figures if row["oldest_ready_age"] is not None]
    oldest = round(max(ages), 1) if ages else None
    result: dict[str, Any] = {
        "status": "ok", "ready": ready, "running": running, "oldest_ready_age": oldest,
        "stale": False,
    }
    limit = executor_settings.HEALTH_QUEUE_MAX_AGE
    if oldest is not None and oldest > limit:
        result["stale"] = True
        result["warning"] = (
            f"the oldest READY task waits for {oldest:.0f}s (over {limit:g}s): "
            "is a worker (manage.py run_executor) running?"
        )
    return result


def model_backend_health() -> dict[str, Any]:
    from chat.backends import reply_backend_primary
    from chat.backends.breaker import breaker_get
    from chat.conf import chat_settings

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


def operations_health() -> dict[str, Any]:
    from grace.audit_writer import audit_writer_state
    from grace.metrics.buffer import metrics_state

    return {
        "status": "ok",
        "disabled_features": sorted(features_disabled()),
        "audit": audit_writer_state(),
        "metrics": metrics_state(),
    }


def ops_health_register() -> None:
    from grace.health import health_register

    health_register("channel_layer", channel_layer_health)
    health_register("queue", queue_health)
    health_register("model_backend", model_backend_health)
    health_register("operations", operations_health)
