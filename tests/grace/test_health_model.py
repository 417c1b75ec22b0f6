"""/api/health on an openai backend whose server is down: ``available`` turns False
after its calls failed, before the circuit opens, and the check itself never calls the
server (the scripted server counts every request it gets)."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from chat.backends.base import ReplyRequest
from chat.backends.respond import GeneratedReply, reply_generate
from chat.backends.usage import usage_reset
from tests.chat.llm_fixtures import Scripted, Upstream

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "metrics"])

ASK = ReplyRequest(message="hello", request_id="req-health")


def model_health() -> dict:
    response = Client().get("/api/health")
    body = response.json()
    checks = body.get("checks") or {d["check"]: d for d in body.get("details", [])}
    return checks["model_backend"]


def test_health_reports_failed_calls_without_calling_the_model(
    upstream: Upstream, use_backends, settings
) -> None:
    use_backends("openai", URL=upstream.url, RETRIES=0)
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "BREAKER_FAILURES": 10}
    usage_reset()
    before = model_health()
    assert before["available"] is True and "last_call" not in before  # nothing known yet
    assert upstream.requests == []

    for _ in range(2):  # the server is broken: nothing scripted answers 500
        reply = generate()
        assert reply.flags == ["llm_error", "response_fallback"]
    assert len(upstream.requests) == 2

    for _ in range(5):  # a load balancer polling
        health = model_health()
        assert health["status"] == "ok"  # the fallback answers: not a reason to fail
        assert health["available"] is False
        assert health["circuit"] == "closed"  # 2 failures of 10: not open yet
        assert health["last_call"]["status"] == "error"
        assert health["last_call"]["failures_in_a_row"] == 2
        assert "last 2 call(s) failed" in health["warning"]
    assert len(upstream.requests) == 2  # the checks called nobody

    answer = {"choices": [{"message": {"content": "Back again."}, "finish_reason": "stop"}]}
    upstream.add(Scripted(body=[json.dumps(answer).encode()], chunked=False))
    assert generate().flags == []
    health = model_health()
    assert health["available"] is True and "warning" not in health
    assert health["last_call"]["status"] == "ok"
    assert len(upstream.requests) == 3


def generate() -> GeneratedReply:
    return async_to_sync(reply_generate)(request=ASK, timeout=5)
