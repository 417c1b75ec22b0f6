"""The project's URLs plus a trivial ``/api/ping`` view, to time the request path alone."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from grace.urls import urlpatterns as project_urlpatterns


async def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [path("api/ping", ping), *project_urlpatterns]
