"""One ninja endpoint: ``POST /api/insert`` stores the message as one row."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import path
from ninja import NinjaAPI, Schema

from bench.anchor.app.models import Note

api = NinjaAPI(title="anchor")


class NoteIn(Schema):
    message: str


@api.post("/insert")
async def insert(request: HttpRequest, payload: NoteIn) -> dict[str, int]:
    note = await Note.objects.acreate(text=payload.message)
    return {"id": note.pk}


urlpatterns = [path("api/", api.urls)]
