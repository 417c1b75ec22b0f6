"""Strict JSON for request bodies: every shape a client can send is a value or a 400.

``json.loads`` alone turns some inputs into exceptions far from the request (a body nested
900 deep parses, then overflows the recursion limit when stored; ``NaN`` and ``1e999``
parse, then break the database's JSON; a lone surrogate or NUL breaks PostgreSQL text)
and others into surprises (a duplicate key silently wins, UTF-16 is guessed). Here the
body must be UTF-8 JSON with an object at the top, nested at most ``GRACE_JSON_MAX_DEPTH``
deep (checked on the raw bytes before the recursive parser runs), with finite numbers of
at most ``MAX_NUMBER_CHARS`` characters, unique keys and strings free of NUL and lone
surrogates. Anything else raises ``InvalidJson`` with a sentence saying what and where.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, cast

from django.http import HttpRequest
from ninja.parser import Parser

from grace.ops_conf import ops_settings

# A JSON number longer than this is refused; Python refuses ints over 4,300 digits anyway.
MAX_NUMBER_CHARS = 100
# The strings and the brackets of a JSON text: strings are skipped whole, so a bracket
# inside one does not count.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_INNERMOST = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


class InvalidJson(ValueError):
    """A JSON text that is not acceptable: ``message`` says why (a sentence about its
    ``subject``: the request body, a websocket frame), ``problem`` and ``detail`` where."""

    def __init__(self, predicate: str, *, problem: str, **detail: Any) -> None:
        super().__init__(predicate)
        self.predicate = predicate
        self.subject = "The request body"
        self.problem = problem
        self.detail = detail

    @property
    def message(self) -> str:
        return f"{self.subject} {self.predicate}"

    @property
    def details(self) -> list[dict[str, Any]]:
        return [{"field": "body", "problem": self.problem, **self.detail}]


def json_body_parse(
    *, raw: bytes, max_depth: int, subject: str = "The request body"
) -> dict[str, Any]:
    """The JSON object in ``raw``, or ``InvalidJson`` whose message is about ``subject``.
    The one strict JSON reader of the project: request bodies and websocket frames
    (``grace.ws_guard.frame_parse``)."""
    try:
        return _parse(raw, max_depth)
    except InvalidJson as exc:
        exc.subject = subject
        raise


def _parse(raw: bytes, max_depth: int) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(
            f"is not valid UTF-8 (byte {exc.start}).",
            problem="encoding",
            position=exc.start,
        ) from None
    text = text.removeprefix("\ufeff")
    _depth_check(raw, max_depth)
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
        )
    except InvalidJson:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidJson(
            f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            problem="syntax",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except RecursionError:  # not reached past _depth_check; kept as the last guard
        raise InvalidJson(
            f"is nested more than {max_depth} levels deep.",
            problem="too_deep",
            limit=max_depth,
        ) from None
    if not isinstance(value, dict):
        raise InvalidJson(
            f"must be a JSON object, not {_kind(value)}.",
            problem="not_an_object",
            expected="object",
        )
    _strings_check(value)
    return value


def _depth_check(raw: bytes, max_depth: int) -> None:
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return  # cannot be deeper: no scan
    # Fast, in C: the brackets outside strings, emptied innermost pair by pair; balanced
    # nesting of depth d is gone after d rounds.
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        brackets, removed = _INNERMOST.subn(b"", brackets)
        if not brackets:
            return
        if not removed:
            break
    _depth_scan(raw, max_depth)  # deeper, or unbalanced: the exact scan says where


def _depth_scan(raw: bytes, max_depth: int) -> None:
    depth = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise InvalidJson(
                    f"is nested more than {max_depth} levels deep "
                    f"(at byte {match.start()}).",
                    problem="too_deep",
                    limit=max_depth,
                    position=match.start(),
                )
        elif token in (b"]", b"}"):
            depth -= 1


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJson(
                    f"has the key {_quote(key)} twice in one object.",
                    problem="duplicate_key",
                    key=key[:100],
                )
            seen.add(key)
    return result


def _constant(name: str) -> Any:
    raise InvalidJson(
        f"contains {name}, which is not a JSON number.",
        problem="not_a_number",
        value=name,
    )


def _number_length(literal: str) -> None:
    if len(literal) > MAX_NUMBER_CHARS:
        raise InvalidJson(
            f"has a number of {len(literal)} characters; the limit is "
            f"{MAX_NUMBER_CHARS}.",
            problem="number_too_long",
            limit=MAX_NUMBER_CHARS,
        )


def _int(literal: str) -> int:
    _number_length(literal)
    return int(literal)


def _float(literal: str) -> float:
    _number_length(literal)
    value = float(literal)
    if not math.isfinite(value):
        raise InvalidJson(
            f"has a number too large for a 64-bit float ({literal[:30]}).",
            problem="number_out_of_range",
        )
    return value


def _strings_check(value: Any) -> None:
    """No NUL (PostgreSQL text cannot hold it) and no lone surrogate (not Unicode) in any
    key or string; iterative, the depth is already bounded."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _string_check(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _string_check(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _string_check(text: str) -> None:
    if "\x00" in text:
        raise InvalidJson(
            "has a string with a NUL character (\\u0000).",
            problem="nul_character",
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidJson(
                f"has a string with a lone surrogate "
                f"(\\u{ord(text[exc.start]):04x}): not Unicode text.",
                problem="lone_surrogate",
            ) from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def _quote(key: str) -> str:
    return json.dumps(key[:50] + ("…" if len(key) > 50 else ""), ensure_ascii=True)


class StrictJsonParser(Parser):
    """ninja's parser for JSON bodies, through ``json_body_parse``."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        return json_body_parse(raw=cast(bytes, request.body), max_depth=ops_settings.JSON_MAX_DEPTH)
