"""Benchmark settings: the project's, with /api/ping added."""

from grace.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
