"""The deterministic fallback: small talk, history, knowledge, and honest gaps."""

from __future__ import annotations

import pytest

from chat.backends.base import KnowledgeHit, ReplyRequest
from chat.backends.fallback import FallbackBackend, fallback_answer, relevant_hits
from chat.models import KnowledgeEntry, KnowledgeGap
from tests.chat.conftest import post_chat

pytestmark = pytest.mark.usefixtures("roomy_timeouts")


def answer(message: str, **kwargs) -> tuple[str, dict]:
    return fallback_answer(ReplyRequest(message=message, **kwargs))


@pytest.mark.parametrize("message", ["hi", "Hello!", "hey grace", "Good morning"])
def test_greetings(message):
    text, extra = answer(message)
    assert text.startswith("Hello") and extra["intent"] == "greeting"


@pytest.mark.parametrize("message", ["thanks", "Thank you so much!", "cheers"])
def test_thanks(message):
    assert answer(message)[1]["intent"] == "thanks"


@pytest.mark.parametrize("message", ["bye", "Goodbye!", "see you later"])
def test_farewells(message):
    assert answer(message)[1]["intent"] == "farewell"


def test_what_did_i_say_from_history():
    history = [
        {"role": "user", "content": "My favourite colour is teal."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "And I live in Lisbon."},
        {"role": "assistant", "content": "Nice."},
    ]
    text, extra = answer("What did I say?", history=history)
    assert extra["intent"] == "history"
    assert "teal" in text and "Lisbon" in text
    text, _ = answer("what was my first message?", history=history)
    assert "teal" in text and "Lisbon" not in text


def test_what_did_i_say_without_history():
    text, extra = answer("do you remember what I told you?")
    assert extra["intent"] == "history" and "no earlier messages" in text


def test_quotes_relevant_knowledge_with_titles():
    hits = [
        KnowledgeHit("Pasta › Cooking", "Boil the pasta in salted water for ten minutes.", 0.9, 1),
        KnowledgeHit("Weather", "It rains in spring.", 0.25, 2),
    ]
    text, extra = answer("How long do I boil pasta?", knowledge=hits)
    assert extra["intent"] == "knowledge"
    assert "**Pasta › Cooking**" in text and "salted water" in text
    assert "Weather" not in text
    assert [hit.title for hit in extra["sources"]] == ["Pasta › Cooking"]


def test_irrelevant_knowledge_is_not_quoted():
    hits = [KnowledgeHit("Commands › run_executor", "Run a worker of the executor.", 0.15, 1)]
    assert relevant_hits("Can you run a marathon in under three hours?", hits) == []
    text, extra = answer("Can you run a marathon in under three hours?", knowledge=hits)
    assert extra["unanswered"] is True and "don't know that yet" in text


async def test_streams_the_whole_reply_as_one_piece():
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    result = await FallbackBackend("fallback", {}).generate(
        ReplyRequest(message="hello"), on_token=on_token
    )
    # One piece: the reply is whole already, smaller pieces would show nothing sooner.
    assert pieces == [result.text] and result.text.startswith("Hello")
    assert result.backend == "fallback" and result.first_token_ms is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("question", "title_part", "quote"),
    [
        ("How do I run the executor worker?", "executor", "run_executor"),
        ("How do I create an API token?", "create_api_token", "create_api_token"),
        ("What does GRACE_FAULTS do?", "Fault injection", "GRACE_FAULTS"),
        ("how do I load knowledge files with ingest_knowledge?", "ingest_knowledge", ".md"),
    ],
)
async def test_answers_real_questions_from_the_starter_knowledge(
    seeded, client, question, title_part, quote
):
    body = (await post_chat(client, {"message": question})).json()
    assert body["degraded"] is False
    assert body["response"].startswith("Here is what I know")
    assert title_part in body["response"] and quote in body["response"]
    assert await KnowledgeGap.objects.acount() == 0


@pytest.mark.django_db(transaction=True)
async def test_answers_from_the_conversation_history(seeded, client):
    first = (await post_chat(client, {"message": "My cat is called Turing."})).json()
    cid = first["conversation_id"]
    await post_chat(client, {"message": "She likes boxes.", "conversation_id": cid})
    body = (
        await post_chat(client, {"message": "What did I tell you?", "conversation_id": cid})
    ).json()
    assert "Turing" in body["response"] and "boxes" in body["response"]
    other = (await post_chat(client, {"message": "What did I tell you?"})).json()
    assert "Turing" not in other["response"]  # a new conversation has no history


@pytest.mark.django_db(transaction=True)
async def test_unknown_question_records_a_knowledge_gap(seeded, client):
    for _ in range(2):
        body = (await post_chat(client, {"message": "What is the capital of Mongolia?"})).json()
        assert "don't know that yet" in body["response"]
        assert body["degraded"] is False
    gap = await KnowledgeGap.objects.aget()
    assert gap.question == "What is the capital of Mongolia?"
    assert gap.times_asked == 2 and gap.last_request_id == body["request_id"]
    await KnowledgeGap.objects.filter(pk=gap.pk).aupdate(resolved=True)
    await post_chat(client, {"message": "what is the  capital of mongolia?"})
    gap = await KnowledgeGap.objects.aget()
    assert gap.times_asked == 3 and gap.resolved is False  # asked again: open again


@pytest.mark.django_db(transaction=True)
async def test_a_new_question_asked_at_once_is_stored_every_time(seeded, client):
    """Replies asking the same new question together all keep their exchange and count
    (on PostgreSQL an update-then-insert let all but one fail on the unique hash)."""
    import asyncio

    from chat.pipeline import chat_reply
    from tests.chat.test_pipeline import OWNER

    bodies = await asyncio.gather(*(
        chat_reply(message="What is the boiling point of hafnium?", owner=OWNER)
        for _ in range(8)
    ))
    assert [b["metadata"]["stages"]["store"] for b in bodies] == ["ok"] * 8
    assert not any(b["degraded"] for b in bodies)
    gap = await KnowledgeGap.objects.aget()
    assert gap.times_asked == 8


@pytest.mark.django_db(transaction=True)
async def test_new_knowledge_is_found_at_once(seeded, client):
    await KnowledgeEntry.objects.acreate(
        title="Tungsten", body="Tungsten boils at 5555 degrees Celsius.", domain="all"
    )
    body = (await post_chat(client, {"message": "What is the boiling point of tungsten?"})).json()
    assert "**Tungsten**" in body["response"] and "5555" in body["response"]
