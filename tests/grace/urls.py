"""A test URLconf: the project's URLs plus endpoints that exercise the error paths.

The test API is a separate NinjaAPI with the project's own exception handlers
(``api_errors_install``), mounted under ``/api/test/``; plain Django views sit under
``/api/plain/`` and, outside the API, under ``/pages/``. Used in-process through
``@pytest.mark.urls`` and by real server processes through ``tests.grace.server_settings``.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Schema
from ninja.security import django_auth
from ninja.throttling import AnonRateThrottle
from pydantic import Field

from grace.api import ApiError, api_errors_install
from grace.request_id import request_id_get
from grace.urls import urlpatterns as project_urlpatterns

logger = logging.getLogger("tests.grace.views")

test_api = NinjaAPI(title="Grace test API", urls_namespace="grace-test")
api_errors_install(test_api)


class EchoIn(Schema):
    name: str = Field(min_length=1, max_length=20)
    count: int = Field(ge=0, le=10)


@test_api.post("/echo", auth=None)
def echo(request: HttpRequest, payload: EchoIn) -> dict:
    return {"name": payload.name, "count": payload.count, "request_id": request_id_get()}


@test_api.get("/boom", auth=None)
def boom(request: HttpRequest) -> dict:
    logger.info("about to fail")
    raise RuntimeError("secret-detail-xyz must never reach the client")


@test_api.get("/aboom", auth=None)
async def aboom(request: HttpRequest) -> dict:
    logger.info("about to fail (async)")
    raise RuntimeError("secret-detail-xyz must never reach the client")


@test_api.get("/rid", auth=None)
def rid(request: HttpRequest) -> dict:
    logger.info("inside a sync view")
    return {"request_id": request_id_get()}


@test_api.get("/arid", auth=None)
async def arid(request: HttpRequest) -> dict:
    logger.info("inside an async view")
    return {"request_id": request_id_get()}


@test_api.api_operation(["GET", "POST"], "/slashed/", auth=None)
def slashed(request: HttpRequest) -> dict:
    return {"ok": True}


@test_api.get("/limited", auth=None, throttle=[AnonRateThrottle("2/m")])
def limited(request: HttpRequest) -> dict:
    return {"ok": True}


@test_api.get("/private", auth=django_auth)
def private(request: HttpRequest) -> dict:
    return {"ok": True}


@test_api.get("/forbidden", auth=None)
def forbidden(request: HttpRequest) -> dict:
    raise PermissionDenied("no")


@test_api.get("/conflict", auth=None)
def conflict(request: HttpRequest) -> dict:
    raise ApiError(
        "Already there.", status=409, details=[{"field": "name"}], headers={"Retry-After": "3"}
    )


def plain_boom(request: HttpRequest) -> HttpResponse:
    logger.info("plain view about to fail")
    raise RuntimeError("secret-detail-xyz from a plain view")


async def plain_aboom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret-detail-xyz from an async plain view")


@csrf_exempt
def plain_body(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"bytes": len(request.body)})


def plain_detail(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"detail": "This thing is gone."}, status=410)


async def session_set(request: HttpRequest) -> HttpResponse:
    await request.session.aset("color", request.GET.get("color", "blue"))
    return JsonResponse({"set": True})


async def session_get(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"color": await request.session.aget("color")})


def message_add(request: HttpRequest) -> HttpResponse:
    messages.info(request, "saved it")
    return HttpResponse("added")


def message_list(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"messages": [str(m) for m in messages.get_messages(request)]})


async def form_post(request: HttpRequest) -> HttpResponse:
    return HttpResponse("accepted")


urlpatterns = [
    path("pages/session/set", session_set),
    path("pages/session/get", session_get),
    path("pages/messages/add", message_add),
    path("pages/messages/list", message_list),
    path("pages/form", form_post),
    path("api/test/", test_api.urls),
    path("api/plain/boom", plain_boom),
    path("api/plain/aboom", plain_aboom),
    path("api/plain/body", plain_body),
    path("api/plain/detail", plain_detail),
    path("pages/boom", plain_boom),
    path("pages/aboom", plain_aboom),
    *project_urlpatterns,
]
