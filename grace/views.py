from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from grace.api import api, errors
from grace.errors import error_response
from grace.health import health_collect
from grace.schemas import HealthOut


@api.get(
    "/health",
    tags=["health"],
    summary="Each dependency checked",
    auth=None,
    response={200: HealthOut, **errors(503)},
    description="200 when every check passes; 503 `unhealthy` with one detail per failing "
    "check otherwise.",
)
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
