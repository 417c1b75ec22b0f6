"""What the chat app contributes to the core from ``ChatConfig.ready()``: fault points,
feature switches, the ``model_backend`` health entry, the circuit breaker gauge, the
xllamacpp dependency, its metric families, and its signals."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.backends.breaker import OPEN, breaker_get
from chat.pipeline import STAGES, chat_reply
from chat.signals import reply_finished
from grace.auth import Owner
from grace.faults import fault_points
from grace.features import dependencies, features
from grace.health import health_checks
from grace.metrics.buffer import gauges_read

OWNER = Owner(session_key="r" * 32)


def test_every_stage_is_a_fault_point_and_the_optional_ones_are_features():
    points = fault_points()
    assert [stage.name for stage in STAGES] == ["inspect", "recall", "respond", "store",
                                                 "followup"]
    for stage in STAGES:
        assert stage.name in points and stage.does in points[stage.name]
    assert {"inspection", "recall", "learning", "causal"} <= set(features())
    for stage in STAGES:
        assert set(stage.features) <= set(features())


def test_model_backend_health_names_the_primary_and_its_circuit(use_backends):
    use_backends("openai", URL="")  # unavailable: the fallback answers
    result = health_checks()["model_backend"]()
    assert result["status"] == "ok"  # a model outage never fails the health check
    assert result["backend"] == "primary" and result["available"] is False
    assert result["circuit"] == "closed" and result["fallback"] == "fallback"
    assert "fallback" in result["warning"]


@pytest.mark.django_db  # gauges_read also reads the queue gauges
def test_circuit_breaker_gauge_follows_the_breaker(use_backends):
    use_backends("openai", URL="http://127.0.0.1:9/v1")
    gauges = {(name, labels["backend"]): value for name, labels, value in gauges_read()
              if name == "circuit_breaker_state"}
    assert gauges == {("circuit_breaker_state", "primary"): 0.0,
                      ("circuit_breaker_state", "fallback"): 0.0}
    breaker = breaker_get("primary")
    while breaker.state != OPEN:
        breaker.failure()
    gauges = {labels["backend"]: value for name, labels, value in gauges_read()
              if name == "circuit_breaker_state"}
    assert gauges["primary"] == 2.0


def test_xllamacpp_is_a_dependency_only_of_the_local_backend(use_backends):
    use_backends("fallback")
    assert "xllamacpp" not in {dependency.module for dependency in dependencies()}
    use_backends("local")
    assert "xllamacpp" in {dependency.module for dependency in dependencies()}


@pytest.mark.django_db(databases=["default", "metrics"])
def test_the_chat_metric_families_are_on_the_scrape():
    client = Client()
    staff = get_user_model().objects.create_user("scraper", password="pw-scrape-123",
                                                 is_staff=True)
    client.force_login(staff)
    response = client.get("/api/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    for family in ("grace_chat_replies", "grace_chat_stage_outcomes", "grace_security_events",
                   "grace_model_requests", "grace_circuit_breaker_state"):
        assert f"# HELP {family}" in text, family


@pytest.mark.django_db(transaction=True)
async def test_reply_finished_carries_the_owner_and_the_body(seeded, roomy_timeouts):
    heard: list[dict[str, Any]] = []

    def receiver(sender: Any, owner: Owner, body: dict[str, Any], **kwargs: Any) -> None:
        heard.append({"owner": owner, "body": body})

    reply_finished.connect(receiver, dispatch_uid="tests.chat.reply_finished")
    try:
        body = await chat_reply(message="hello", owner=OWNER)
    finally:
        reply_finished.disconnect(dispatch_uid="tests.chat.reply_finished")
    assert heard == [{"owner": OWNER, "body": body}]


@pytest.mark.django_db(transaction=True)
async def test_a_receiver_that_raises_does_not_fail_the_reply(seeded, roomy_timeouts):
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    reply_finished.connect(broken, dispatch_uid="tests.chat.broken")
    try:
        body = await chat_reply(message="hello", owner=OWNER)
    finally:
        reply_finished.disconnect(dispatch_uid="tests.chat.broken")
    assert body["response"].startswith("Hello")
