from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from django.core.cache import cache

from tests.grace.ops_support import ops_chat, seeded_rules  # noqa: F401 - operations fixtures
from tests.grace.support import LogCapture, json_handler


@pytest.fixture
def json_log() -> Iterator[LogCapture]:
    """Swap the stream of the project's JSON stderr handler for a buffer."""
    handler = json_handler()
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield LogCapture(stream)
    finally:
        handler.setStream(previous)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()  # throttling counts live in the cache
    yield
