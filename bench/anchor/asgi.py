"""The anchor served by daphne: Django for HTTP, one Channels consumer for websockets.

``/ws/insert/``: each JSON frame ``{"message": ...}`` inserts one row and is answered
with one frame ``{"type": "done", "id": ...}``, the websocket twin of ``POST /api/insert``.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.anchor.settings")
django_asgi_app = get_asgi_application()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.anchor.app.models import Note  # noqa: E402


class InsertConsumer(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs) -> None:
        note = await Note.objects.acreate(text=str(content.get("message", "")))
        await self.send_json({"type": "done", "id": note.pk})


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/insert/", InsertConsumer.as_asgi())]),
    }
)
