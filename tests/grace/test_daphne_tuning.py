"""Twisted's per-POST Content-Type parse, memoised under daphne (grace/daphne_tuning.py):
the same answers as Twisted's own parse, once per value."""

from __future__ import annotations

import twisted.web.http as twisted_http

from grace.daphne_tuning import content_type_parse_cached

CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"Application/JSON",
    b"application/x-www-form-urlencoded",
    b"application/x-www-form-urlencoded; charset=UTF-8",
    b'multipart/form-data; boundary="----x"',
    b"multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
    b"text/plain",
    b"",
    b"nonsense",
    b";;;",
    b"text/html; charset=\xe9",
]


def test_the_memoised_parse_answers_as_twisteds_own() -> None:
    original = twisted_http._parseContentType
    original = getattr(original, "__wrapped__", original)
    try:
        assert content_type_parse_cached() is True
        memoised = twisted_http._parseContentType
        assert memoised.__wrapped__ is original  # type: ignore[attr-defined]
        assert content_type_parse_cached() is True  # idempotent: not wrapped twice
        assert twisted_http._parseContentType is memoised
        for _ in range(2):
            for value in CONTENT_TYPES:
                assert memoised(value) == original(value), value
        assert memoised.cache_info().hits >= len(CONTENT_TYPES)  # type: ignore[attr-defined]
    finally:
        twisted_http._parseContentType = original
