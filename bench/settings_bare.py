"""Benchmark baseline: the project's settings without any middleware (no request IDs,
no JSON errors, no access log, none of Django's own middleware either)."""

from grace.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
MIDDLEWARE: list[str] = []
# The admin refuses to start without its middleware; the baseline never serves it.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]
