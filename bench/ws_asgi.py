"""Bench-only ASGI application: the project's, plus ``/ws/echo/`` (the ceiling).

The echo consumer answers each frame with one JSON frame and touches nothing else:
what a websocket exchange costs in daphne and Channels alone.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from grace.routing import websocket_urlpatterns  # noqa: E402


class EchoConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept(subprotocol="grace.v1")

    async def receive_json(self, content, **kwargs) -> None:
        await self.send_json({"type": "done", "response": content.get("message", "")})


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter([*websocket_urlpatterns, path("ws/echo/", EchoConsumer.as_asgi())])
            )
        ),
    }
)
