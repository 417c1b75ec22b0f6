"""A deterministic reply backend that writes slowly, for end-to-end tests of streaming
and ``stop`` in a real browser (a real model may not be installed, and is not
deterministic)."""

from __future__ import annotations

import asyncio
import time

from chat.backends.base import ReplyBackend, ReplyRequest, ReplyResult, TokenCallback

WORDS = (
    "Grace writes this reply slowly, one word at a time, so that a person watching the "
    "page can see it stream in and press Stop before it ends. Each word arrives after a "
    "short pause; the whole reply takes a few seconds; nothing here is random, so tests "
    "can read it back exactly as it was sent."
).split()


class SlowBackend(ReplyBackend):
    """``OPTIONS``: ``DELAY`` seconds between words (default 0.06)."""

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        delay = float(self.options.get("DELAY", 0.06))
        started = time.perf_counter()
        text = ""
        for index, word in enumerate(WORDS):
            await asyncio.sleep(delay)
            piece = word if index == 0 else f" {word}"
            text += piece
            if on_token is not None:
                await on_token(piece)
        return ReplyResult(
            text=text,
            backend=self.alias,
            model="slow-test-writer",
            latency_ms=int((time.perf_counter() - started) * 1000),
        )
