"""Benchmark settings for bench_chat.py: the project's, plus /api/bench/insert."""

from grace.settings import *  # noqa: F403

ROOT_URLCONF = "bench.chat_urls"
