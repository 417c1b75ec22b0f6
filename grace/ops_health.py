"""The core's entries of ``/api/health`` (registered with ``health_register``); the apps
register their own (the chat's model backend, the executor's queue).

- ``channel_layer``: a message sent to a fresh channel and received back.
- ``operations``: the audit writer and metrics flusher of this process (pending,
  dropped, failures) and the switched-off features.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from grace.audit_writer import audit_writer_state
from grace.features import features_disabled
from grace.health import health_register
from grace.metrics.buffer import metrics_state

CHANNEL_LAYER_TIMEOUT = 1.5


def channel_layer_health() -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        return {"status": "error", "error": "CHANNEL_LAYERS has no default layer"}

    async def round_trip() -> bool:
        async with asyncio.timeout(CHANNEL_LAYER_TIMEOUT):
            channel = await layer.new_channel("health.")
            await layer.send(channel, {"type": "health.ping"})
            message = await layer.receive(channel)
            return bool(message.get("type") == "health.ping")

    ok = async_to_sync(round_trip)()
    return {"status": "ok" if ok else "error", "backend": type(layer).__name__}


def operations_health() -> dict[str, Any]:
    return {
        "status": "ok",
        "disabled_features": sorted(features_disabled()),
        "audit": audit_writer_state(),
        "metrics": metrics_state(),
    }


def ops_health_register() -> None:
    health_register("channel_layer", channel_layer_health)
    health_register("operations", operations_health)
