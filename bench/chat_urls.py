"""The project's URLs plus a bench-only ninja endpoint doing one ORM insert: the baseline
of bench_chat.py. Its own NinjaAPI, mounted under /api/ so the same middleware runs."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import path
from ninja import NinjaAPI, Schema

from chat.models import CausalEvent
from grace.request_id import request_id_get
from grace.urls import urlpatterns as project_urlpatterns

bench_api = NinjaAPI(title="bench", urls_namespace="bench", docs_url=None, openapi_url=None)


class InsertIn(Schema):
    message: str


@bench_api.post("/insert", auth=None)
async def insert(request: HttpRequest, payload: InsertIn) -> dict[str, int]:
    row = await CausalEvent.objects.acreate(
        event_type="bench", outcome=payload.message[:32], request_id=request_id_get() or ""
    )
    return {"id": row.pk}


urlpatterns = [path("api/bench/", bench_api.urls), *project_urlpatterns]
