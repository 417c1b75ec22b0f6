from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from grace.api import api
from grace.errors import error_response
from grace.health import health_collect


@api.get("/health", tags=["health"], summary="Each dependency checked", auth=None)
def health(request: HttpRequest) -> HttpResponse:
    checks = health_collect()
    failing = sorted(name for name, result in checks.items() if result.get("status") != "ok")
    if failing:
        return error_response(
            status=503,
            error="unhealthy",
            message=f"Failing checks: {', '.join(failing)}.",
            details=[{"check": name, **checks[name]} for name in failing],
        )
    return JsonResponse({"status": "ok", "checks": checks})
