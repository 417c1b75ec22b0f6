"""Token counts of a reply backend call that ends early: the usage line (and the
``model_tokens`` figures) count what was streamed, not "0 prompt + 0 completion"."""

from __future__ import annotations

import asyncio
import logging

import pytest

from chat.backends.base import ReplyRequest
from chat.backends.respond import reply_generate
from chat.backends.usage import UsageTally, usage_reset, usage_snapshot
from tests.chat.llm_fixtures import Scripted, Upstream, chunk, sse
from tests.timing import wait_until_async

ASK = ReplyRequest(message="Tell me about the sea, at length.", request_id="req-usage")


def usage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "chat.backends.usage"]


async def test_a_stopped_stream_counts_its_streamed_tokens(
    upstream: Upstream, use_backends, caplog
) -> None:
    upstream.add(Scripted(body=sse(*[x for _ in range(60) for x in (chunk("word "), 0.03)])))
    use_backends("openai", URL=upstream.url)
    usage_reset()
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    caplog.set_level(logging.INFO, logger="chat.backends.usage")
    task = asyncio.create_task(reply_generate(request=ASK, on_token=on_token, timeout=10))
    await wait_until_async(lambda: len(pieces) >= 5, timeout=5, message="5 pieces streamed")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    streamed = len(pieces)
    [line] = usage_lines(caplog)
    assert line.startswith("reply backend primary: stopped in ")
    assert line.endswith(
        f"(prompt tokens unknown + {streamed} completion tokens, counted from the stream)"
    )
    assert usage_snapshot()["primary"]["completion_tokens"] == streamed


async def test_a_stream_cut_by_its_deadline_counts_its_tokens(
    upstream: Upstream, use_backends, caplog
) -> None:
    """The server sent its usage so far on every chunk (as llama.cpp's timings do): those
    counts are the real ones."""
    events = [
        x
        for n in range(1, 200)
        for x in (chunk("word ", usage={"prompt_tokens": 41, "completion_tokens": n}), 0.02)
    ]
    upstream.add(Scripted(body=sse(*events)))
    use_backends("openai", URL=upstream.url)
    usage_reset()
    caplog.set_level(logging.INFO, logger="chat.backends.usage")

    async def on_token(piece: str) -> None:
        pass

    reply = await reply_generate(request=ASK, on_token=on_token, timeout=1.0)
    assert "llm_timeout" in reply.flags and "response_truncated" in reply.flags
    streamed = reply.result.text.count("word")
    assert streamed > 0
    [line] = [line for line in usage_lines(caplog) if "primary" in line]
    assert line.startswith("reply backend primary: timeout in ")
    assert line.endswith(f"(41 prompt + {streamed} completion tokens)")
    totals = usage_snapshot()["primary"]
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (41, streamed)


def test_the_tally_reads_llama_cpp_timings_and_prefers_the_servers_counts() -> None:
    tally = UsageTally()
    for n in (1, 2, 3):
        tally.note(
            {
                "choices": [{"delta": {"content": "x"}}],
                "timings": {"cache_n": 10, "prompt_n": 27, "predicted_n": n},
            }
        )
    tally.note({"choices": [{"delta": {"content": ""}}]})  # an empty piece is no token
    assert tally.usage() == ({"prompt_tokens": 37, "completion_tokens": 3}, "reported")
    tally.note({"choices": [{"delta": {"content": "y"}}]})  # one the server did not count
    assert tally.usage() == ({"prompt_tokens": 37, "completion_tokens": 4}, "streamed")


@pytest.mark.slow
async def test_the_embedded_model_stopped_mid_reply_reports_its_real_counts(
    use_backends, caplog
) -> None:
    """The local backend (llama.cpp in-process) asks for per-token timings: a stopped
    reply logs its real prompt and completion counts."""
    use_backends("local", MAX_TOKENS=200, CONCURRENCY=1, CONTEXT=1024, THREADS=1)
    usage_reset()
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    caplog.set_level(logging.INFO, logger="chat.backends.usage")
    task = asyncio.create_task(reply_generate(request=ASK, on_token=on_token, timeout=60))
    await wait_until_async(lambda: len(pieces) >= 8, timeout=60, message="8 pieces streamed")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [line] = usage_lines(caplog)
    assert line.startswith("reply backend primary: stopped in ")
    totals = usage_snapshot()["primary"]
    assert totals["prompt_tokens"] > 10  # the chat template and the question
    assert totals["completion_tokens"] >= 8
    assert line.endswith(
        f"({totals['prompt_tokens']} prompt + {totals['completion_tokens']} completion tokens)"
    )
