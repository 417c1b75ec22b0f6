"""How facts reach a reply (chat/backends/grounding.py): which entries are quoted, how,
arithmetic, the sentence a cut reply ends at, and the local model's measured speed."""

from __future__ import annotations

import pytest

from chat.backends.base import KnowledgeHit, ReplyRequest
from chat.backends.fallback import FallbackBackend
from chat.backends.grounding import (
    SentenceGate,
    arithmetic_answer,
    confident_hits,
    knowledge_answer,
    sources_of,
    trim_to_sentence,
    unwrap,
)
from chat.backends.local import Speed
from chat.backends.prompt import cited_hits, prompt_messages

REFUNDS = KnowledgeHit(
    "Returns and money › Refunds",
    "Once a returned parcel reaches our warehouse, the refund is paid within 5 working days\n"
    "to the payment method used for the order. If you choose store credit instead, we add\n"
    "10 percent on top.",
    0.81,
    7,
    "bench/corpus/handbook/returns.md",
)
HOURS = KnowledgeHit("Stores › Opening hours", "Open 9:00 to 19:00, Monday to Saturday.", 0.35, 8)


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("What is 2+2?", "2 + 2 = 4."),
        ("what's 12 * 7", "12 * 7 = 84."),
        ("Calculate (3 + 4) * 2", "(3 + 4) * 2 = 14."),
        ("How much is 10/4?", "10 / 4 = 2.5."),
        ("2^10", "2 ^ 10 = 1024."),
    ],
)
def test_plain_arithmetic_is_answered_exactly(question, answer):
    assert arithmetic_answer(question) == answer


@pytest.mark.parametrize(
    "question", ["What is 2024?", "What is the capital of France?", "1/0", "9^99999", "hi"]
)
def test_other_questions_are_not_arithmetic(question):
    assert arithmetic_answer(question) is None


async def test_the_fallback_answers_arithmetic_too():
    result = await FallbackBackend("fallback", {}).generate(ReplyRequest("What is 2+2?"))
    assert result.text == "2 + 2 = 4." and result.sources == []


def test_a_paraphrase_with_a_high_score_is_quoted_without_shared_words():
    # "money back" shares no word with the entry; search scored it by meaning.
    hits = confident_hits("When do I get my money back?", [REFUNDS, HOURS])
    assert hits == [REFUNDS]  # the second scores far below the first


def test_weak_unrelated_hits_are_not_quoted():
    # Below GRACE_KNOWLEDGE_MIN_RELEVANCE (0.2): recall itself would not pass it on.
    weak = KnowledgeHit("Stores › Opening hours", "Open 9:00 to 19:00.", 0.15, 8)
    assert confident_hits("What's the weather like on Mars?", [weak]) == []


def test_the_quote_joins_hard_wrapped_lines_and_keeps_the_facts():
    text = knowledge_answer("When do I get my money back?", [REFUNDS])
    assert "**Returns and money › Refunds**" in text
    assert "within 5 working days to the payment method" in text  # one line, joined
    assert "10 percent on top." in text


def test_unwrap_keeps_lists_and_code():
    text = "Steps to follow\nin order:\n\n- one\n- two\n\n```\na\nb\n```"
    assert unwrap(text) == "Steps to follow in order:\n\n- one\n- two\n\n```\na\nb\n```"


def test_sources_are_title_source_and_score():
    assert sources_of([REFUNDS]) == [
        {
            "title": "Returns and money › Refunds",
            "source": "bench/corpus/handbook/returns.md",
            "score": 0.81,
        }
    ]


@pytest.mark.parametrize(
    ("text", "trimmed"),
    [
        ("The refund takes 5 days. It is paid to the", "The refund takes 5 days."),
        ("Shipping costs 4.95 EUR. Above 60 EUR it is", "Shipping costs 4.95 EUR."),
        ("Bring e.g. a tent. Also bring", "Bring e.g. a tent."),
        ("Done!", "Done!"),
        ("Steps:\n1. Do this.\n2. Do th", "Steps:\n1. Do this."),
        ("No sentence ends here", "No sentence ends here…"),
    ],
)
def test_a_cut_reply_ends_at_its_last_sentence(text, trimmed):
    assert trim_to_sentence(text) == trimmed


def test_the_model_server_prompt_asks_for_grounded_cited_answers():
    request = ReplyRequest("When do I get my money back?", knowledge=[REFUNDS, HOURS])
    system = prompt_messages(request)[0]["content"]
    assert "answer only from them" in system and "[1]" in system
    assert "[1] Returns and money › Refunds" in system and "[2] Stores › Opening hours" in system
    reply = "You get it within 5 working days [1]."
    assert cited_hits(reply, [REFUNDS, HOURS]) == [REFUNDS]
    assert cited_hits("I don't know.", [REFUNDS, HOURS]) == []


def test_speed_is_a_moving_average_of_llama_timings():
    speed = Speed()
    speed.update({"prompt_n": 400, "prompt_ms": 2000, "predicted_n": 100, "predicted_ms": 2000})
    assert speed.prompt_tps == 200 and speed.generate_tps == 50  # the first one as it is
    speed.update({"prompt_n": 400, "prompt_ms": 4000, "predicted_n": 100, "predicted_ms": 10000})
    assert 50 > speed.generate_tps > 10 and 200 > speed.prompt_tps > 100
    speed.update({"predicted_n": 2, "predicted_ms": 1})  # too short to tell: ignored
    assert speed.generate_tps < 50
    # 10 s at 50 tokens/s, less the prompt's evaluation (700 chars = 200 tokens at 200/s).
    fresh = Speed()
    fresh.update({"prompt_n": 400, "prompt_ms": 2000, "predicted_n": 100, "predicted_ms": 2000})
    assert fresh.tokens_for(10.0, 700) == 450


async def _gate(pieces: list[str], *, hold_at: int, complete: bool) -> tuple[list[str], str]:
    sent: list[str] = []

    async def on_token(piece: str) -> None:
        sent.append(piece)

    gate = SentenceGate(on_token)
    for index, piece in enumerate(pieces):
        if index == hold_at:
            gate.hold()
        await gate(piece)
    await gate.finish(complete=complete)
    assert "".join(sent) == gate.text  # what streamed is exactly the reply
    return sent, gate.text


async def test_a_stopped_stream_ends_at_its_last_sentence():
    words = ["The", " refund", " takes", " 5", " days", ".", " It", " is", " paid"]
    sent, text = await _gate(words, hold_at=2, complete=False)
    assert text == "The refund takes 5 days."
    assert sent[:2] == ["The", " refund"]  # before holding, pieces pass at once
    _, text = await _gate(words, hold_at=2, complete=True)
    assert text == "The refund takes 5 days. It is paid"  # a finished reply is whole


async def test_a_number_is_not_a_sentence_end_and_no_sentence_gets_an_ellipsis():
    _, text = await _gate(
        ["Costs", " 4", ".", "95", " EUR", ".", " Then"], hold_at=0, complete=False
    )
    assert text == "Costs 4.95 EUR."
    _, text = await _gate(["Once", " upon", " a", " time", ","], hold_at=0, complete=False)
    assert text == "Once upon a time,…"


def test_a_long_entry_is_quoted_by_the_sentences_that_answer():
    filler = " ".join(f"Sentence {n} is about something else entirely." for n in range(30))
    body = (
        "```python\nOPTIONS = {'max_attempts': 3, 'lease_seconds': 30}\n```\n\n"
        f"{filler} Invalid values are refused: max_attempts must be within 1..100. {filler}"
    )
    hit = KnowledgeHit("Executor › Settings", body, 0.6)
    text = knowledge_answer("What is the allowed range for max_attempts?", [hit])
    assert "max_attempts must be within 1..100." in text
    assert len(text) < 900  # the sentences that answer, not the whole entry
