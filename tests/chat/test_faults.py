"""Every stage x {error, timeout, hang} through GRACE_FAULTS: 200, degraded, the stage's
flag, and a wall time bounded by the deadline; plus the parser, the health entry, and a
real server started with GRACE_FAULTS in its environment."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured

from chat.models import Conversation, KnowledgeGap, LearningRecord, Message
from grace.faults import fault_points, faults_parse
from tests.chat.conftest import post_chat
from tests.servers import ROOT, project_env
from tests.timing import limit

STAGE_FLAGS = {
    "inspect": "inspection_skipped",
    "recall": "recall_failed",
    "respond": "response_fallback",
    "store": "memory_store_failed",
    "followup": "followup_failed",
}
DEADLINE = 3.0
MARGIN = limit(1.0)  # beyond a deadline or a stage timeout Grace enforces


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["error", "timeout", "hang"])
@pytest.mark.parametrize("stage", list(STAGE_FLAGS))
async def test_stage_fault_degrades_but_answers(seeded, client, fast_timeouts, stage, mode):
    chat_config = fast_timeouts
    chat_config.GRACE = {**chat_config.GRACE, "FAULTS": {stage: mode}}
    started = time.monotonic()
    response = await post_chat(client, {"message": "How do I run the executor worker?"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["degraded"] is True
    assert STAGE_FLAGS[stage] in body["metadata"]["flags"]
    expected = "error" if mode == "error" else "timeout"
    assert body["metadata"]["stages"][stage] == expected
    assert body["response"]  # an answer, always
    assert elapsed < DEADLINE + MARGIN, f"{stage}={mode} took {elapsed:.2f}s"
    if mode != "error":  # the stage ran out of its own time, not the whole deadline
        assert elapsed < chat_config.GRACE_CHAT["STAGE_TIMEOUTS"][stage] + MARGIN
    # Every other stage ran normally.
    others = {s: v for s, v in body["metadata"]["stages"].items() if s != stage}
    assert set(others.values()) == {"ok"}, others
    stored = await Message.objects.filter(conversation_id=body["conversation_id"]).acount()
    assert stored == (0 if stage == "store" else 2)
    if stage == "respond":
        assert body["metadata"]["backend"] == "fallback"
        assert "run_executor" in body["response"]  # the fallback still used recall
    if stage == "recall":
        assert "I don't know that yet" in body["response"]  # answered without context
    if stage == "followup" and mode == "error":
        assert await LearningRecord.objects.acount() == 0


@pytest.mark.django_db(transaction=True)
async def test_every_stage_failing_at_once_still_answers_in_time(
    seeded, client, fast_timeouts
):
    chat_config = fast_timeouts
    chat_config.GRACE = {**chat_config.GRACE, "FAULTS": {
        "inspect": "hang", "recall": "hang", "respond": "hang", "store": "hang",
        "followup": "hang",
    }}
    started = time.monotonic()
    response = await post_chat(client, {"message": "hello there"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    assert set(STAGE_FLAGS.values()) <= set(body["metadata"]["flags"])
    assert body["response"].startswith("Hello")
    assert elapsed < DEADLINE + MARGIN
    assert await Conversation.objects.acount() == 0


@pytest.mark.django_db(transaction=True)
async def test_hung_store_does_not_block_the_next_request(seeded, client, fast_timeouts):
    chat_config = fast_timeouts
    chat_config.GRACE = {**chat_config.GRACE, "FAULTS": {"store": "hang"}}
    first = await post_chat(client, {"message": "hello"})
    assert "memory_store_failed" in first.json()["metadata"]["flags"]
    chat_config.GRACE = {**chat_config.GRACE, "FAULTS": {}}
    started = time.monotonic()
    second = await post_chat(client, {"message": "What is Grace?"})
    assert time.monotonic() - started < limit(2.0)  # the first request's hung store is not awaited
    assert second.json()["degraded"] is False
    assert await Message.objects.acount() == 2


@pytest.mark.django_db(transaction=True)
async def test_unanswered_question_still_records_a_gap_when_followup_fails(
    seeded, client, chat_config
):
    chat_config.GRACE = {**chat_config.GRACE, "FAULTS": {"followup": "error"}}
    await post_chat(client, {"message": "What is the boiling point of tungsten?"})
    gap = await KnowledgeGap.objects.aget()
    assert "tungsten" in gap.question


def test_parser_accepts_known_points_and_modes():
    assert faults_parse("") == {}
    assert faults_parse(" respond=error, recall=TIMEOUT ,store=hang,") == {
        "respond": "error", "recall": "timeout", "store": "hang",
    }
    assert set(fault_points()) >= set(STAGE_FLAGS)  # every stage is a fault point


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("bogus=error", "unknown fault point 'bogus'"),
        ("store=explode", "unknown mode 'explode'"),
        ("store", "is not 'point=mode'"),
        ("store=error,store=hang", "two modes"),
    ],
)
def test_parser_refuses_bad_values_clearly(raw, needle):
    with pytest.raises(ImproperlyConfigured, match=needle):
        faults_parse(raw, points=fault_points())


def test_parser_without_points_takes_any_name():
    assert faults_parse("bogus=hang") == {"bogus": "hang"}  # the system check refuses it


@pytest.mark.slow
def test_invalid_faults_stop_startup(tmp_path):
    env = project_env(tmp_path, {"GRACE_FAULTS": "respond=error,bogus=hang"})
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "grace.E020" in done.stderr  # the system check of GRACE_FAULTS
    assert "unknown fault point 'bogus'" in done.stderr


@pytest.mark.slow
def test_real_server_with_faults_in_its_environment(grace_server):
    env = {
        "GRACE_FAULTS": "recall=hang,store=timeout,followup=error",
        "GRACE_ALLOW_ANONYMOUS": "true",
        "GRACE_PIPELINE_DEADLINE": "3",
        "GRACE_TIMEOUT_RECALL": "0.5",
        "GRACE_TIMEOUT_STORE": "0.5",
        "GRACE_FAULT_HANG_SECONDS": "5",
    }
    with grace_server(env) as server:
        health = httpx.get(f"{server.url}/api/health", timeout=10).json()
        assert health["checks"]["faults"]["active"] is True
        assert "store=timeout" in health["checks"]["faults"]["faults"]
        assert "GRACE_FAULTS is on" in server.log()
        for _ in range(3):  # hung recall threads of earlier requests block nothing
            started = time.monotonic()
            response = httpx.post(
                f"{server.url}/api/chat/", json={"message": "hello"}, timeout=10
            )
            elapsed = time.monotonic() - started
            assert response.status_code == 200
            body = response.json()
            assert body["degraded"] is True
            assert {"recall_failed", "memory_store_failed", "followup_failed"} <= set(
                body["metadata"]["flags"]
            )
            assert body["metadata"]["stages"]["recall"] == "timeout"
            assert body["metadata"]["stages"]["store"] == "timeout"
            assert body["metadata"]["stages"]["followup"] == "error"
            assert elapsed < 3.0 + MARGIN


@pytest.mark.django_db(transaction=True)
async def test_foreign_conversation_is_refused_even_when_stages_fail(seeded, fast_timeouts):
    chat_config = fast_timeouts
    from django.test import AsyncClient

    owner, intruder = AsyncClient(), AsyncClient()
    theirs = (await post_chat(owner, {"message": "private note"})).json()["conversation_id"]
    body = {"message": "let me in", "conversation_id": theirs}
    # recall checks instead
    chat_config.GRACE = {**chat_config.GRACE, "FAULTS": {"inspect": "error"}}
    assert (await post_chat(intruder, body)).status_code == 422
    # store refuses
    chat_config.GRACE = {**chat_config.GRACE, "FAULTS": "inspect=error,recall=error"}
    response = await post_chat(intruder, body)
    assert response.status_code == 200
    assert "memory_store_failed" in response.json()["metadata"]["flags"]
    assert "private note" not in response.json()["response"]
    assert await Message.objects.filter(conversation_id=theirs).acount() == 2
