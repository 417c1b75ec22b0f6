"""The SSE decoder, fed the way networks deliver bytes: split anywhere."""

from __future__ import annotations

import pytest

from chat.backends.sse import SSEDecoder, SSEEvent

STREAM = (
    "\ufeff: keep-alive\r\n"
    "\r\n"
    'data: {"a": "h\u00e9llo \U0001f600"}\r\n'
    "\r\n"
    "event: update\n"
    "id: 7\n"
    "data: line one\n"
    "data:line two\n"
    "\n"
    ": another comment\r"
    "data: cr only\r"
    "\r"
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    SSEEvent(data='{"a": "h\u00e9llo \U0001f600"}'),
    SSEEvent(data="line one\nline two", event="update", id="7"),
    SSEEvent(data="cr only", id="7"),
    SSEEvent(data="[DONE]", id="7"),
]


def decode(pieces: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def test_whole_stream() -> None:
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte(cut: int) -> None:
    """Two network reads, cut anywhere (inside UTF-8, between CR and LF): same events."""
    assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_stream_without_final_blank_line_still_dispatches() -> None:
    assert decode([b'data: {"x": 1}\ndata: more']) == [SSEEvent(data='{"x": 1}\nmore')]


def test_comments_and_unknown_fields_are_ignored() -> None:
    assert decode([b": ping\n\nretry: 100\nfoo: bar\n\n: ping\n\n"]) == []


def test_cr_at_end_of_stream_ends_the_line() -> None:
    assert decode([b"data: x\r", b"\r"]) == [SSEEvent(data="x")]
