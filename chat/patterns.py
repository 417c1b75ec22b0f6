"""Hunter's rule patterns: how they compile and what makes one unusable. Used by the
``SecurityRule`` model's validation and by Hunter (chat/security.py).

Patterns run on RE2 (google-re2): matching takes time linear in the message, whatever
the pattern, so no rule needs a timeout and none can be skipped for running too long.
The price is what needs a backtracking engine: backreferences, lookahead and lookbehind,
possessive quantifiers and atomic groups are refused with a message that says so.

The syntax is Python's ``re`` as far as RE2 has it; ``\\Z``, ``\\uXXXX``, ``\\UXXXXXXXX``
and ``{,n}`` are translated to RE2's spelling.
"""

from __future__ import annotations

import re

import re2
from django.core.exceptions import ValidationError

MAX_PATTERN_LENGTH = 20_000
MAX_PROGRAM_SIZE = 50_000
"""RE2 instructions one compiled pattern may have. Matching stays linear in the text
whatever the size, but a larger program outgrows RE2's DFA cache (MAX_MEMORY) and runs
tens of times slower: a rule of 37,000 instructions took 8 ms on a 4,000-character
message, the same alternatives as several rules of under 17,000 each 0.03 ms."""
MAX_MEMORY = 8 << 20
"""Bytes RE2 may use for one pattern and its DFA cache (its own default)."""

_EMPTY_PROBES = ("", " ", "a", "a b", "1\n.")

_ENGINE = "Hunter uses RE2 (linear time)"
_UNSUPPORTED = (
    (
        re.compile(r"invalid escape sequence: \\[1-9gk]|\(\?P=: backreference"),
        "Backreferences (\\1, \\g<1>, \\k<name>, (?P=name)) need a backtracking engine; {engine}. "
        "Rewrite the pattern without it, e.g. list the alternatives.",
    ),
    (
        re.compile(r"invalid perl operator: \(\?(?:=|!)"),
        "Lookahead ((?=...), (?!...)) needs a backtracking engine; {engine}. Rewrite the "
        "pattern without it, e.g. match the following text too, or use a character class.",
    ),
    (
        re.compile(r"invalid perl operator: \(\?<(?:=|!)"),
        "Lookbehind ((?<=...), (?<!...)) needs a backtracking engine; {engine}. Rewrite the "
        "pattern without it, e.g. match the preceding text too, or use \\b.",
    ),
    (
        re.compile(r"invalid perl operator: \(\?>|bad repetition operator: [*+?}]\+"),
        "Possessive quantifiers (a++, a*+) and atomic groups ((?>...)) are a backtracking "
        "engine's; {engine} and never backtracks: drop the extra + or the (?>...).",
    ),
)


def _translate(pattern: str) -> str:
    """Python ``re`` spellings RE2 does not know: ``\\Z`` (RE2: ``\\z``), ``\\uXXXX`` and
    ``\\UXXXXXXXX`` (RE2: ``\\x{...}``), ``{,n}`` outside a class (RE2: ``{0,n}``)."""
    if "\\" not in pattern and "{," not in pattern:
        return pattern
    out: list[str] = []
    index, size, in_class = 0, len(pattern), False
    while index < size:
        char = pattern[index]
        if char == "\\" and index + 1 < size:
            following = pattern[index + 1]
            if following == "Z":
                out.append("\\z")
                index += 2
                continue
            digits = {"u": 4, "U": 8}.get(following, 0)
            code = pattern[index + 2 : index + 2 + digits]
            if digits and len(code) == digits and all(c in "0123456789abcdefABCDEF" for c in code):
                out.append("\\x{" + code + "}")
                index += 2 + digits
                continue
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            # a ] right after [ or [^ is a literal
            out.append(char)
            index += 1
            for literal in ("^]", "]", "^"):
                if pattern.startswith(literal, index):
                    out.append(literal)
                    index += len(literal)
                    break
            continue
        if char == "]" and in_class:
            in_class = False
        elif char == "{" and not in_class and pattern.startswith("{,", index):
            closing = re.match(r"\{,(\d+)\}", pattern[index:])
            if closing:
                out.append("{0," + closing.group(1) + "}")
                index += closing.end()
                continue
        out.append(char)
        index += 1
    return "".join(out)


def _options(case_sensitive: bool) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.max_mem = MAX_MEMORY
    options.log_errors = False
    options.never_capture = True  # only whole matches are used: no submatch work
    return options


def pattern_compile(pattern: str, *, case_sensitive: bool = False) -> re2._Regexp:
    """An RE2 regexp (``finditer`` and ``search`` as in ``re``), case-insensitive unless
    asked. Raises ``re2.error`` when RE2 cannot compile it."""
    return re2.compile(_translate(pattern), _options(case_sensitive))


def _message(error: re2.error, pattern: str) -> str:
    reason = error.args[0] if error.args else ""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    if reason.startswith("invalid perl operator: (?P") and "(?P=" in pattern:
        reason = "(?P=: backreference"  # RE2 names only the "(?P"
    for found, message in _UNSUPPORTED:
        if found.search(reason):
            return message.format(engine=_ENGINE)
    if "pattern too large" in reason:
        return (
            "The pattern is too large for Hunter's engine (RE2, at most "
            f"{MAX_MEMORY >> 20} MiB per pattern): split it into several rules or use "
            "smaller repetition counts."
        )
    if reason.startswith("invalid perl operator: (?#"):
        return "Comments ((?#...)) are not supported by Hunter's engine (RE2): remove them."
    if reason.startswith("invalid perl operator: (?x"):
        return (
            "Verbose mode ((?x)) is not supported by Hunter's engine (RE2): write the "
            "pattern without the spaces and comments."
        )
    if reason.startswith("invalid repetition size"):
        return (
            f"Not a valid regular expression: {reason} (RE2 allows counts up to 1,000, "
            "nested repetitions included: {1000} inside {5} is 5,000)."
        )
    return f"Not a valid regular expression: {reason}"


def pattern_validate(pattern: str, *, case_sensitive: bool = False) -> None:
    """Raise ``ValidationError`` (on the ``pattern`` field) for an unusable pattern: empty,
    too long, invalid, needing backtracking, too large a program, or matching the empty
    string (it would match every message)."""
    if not pattern or not pattern.strip():
        raise ValidationError({"pattern": "The pattern is empty."})
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValidationError({"pattern": f"The pattern is over {MAX_PATTERN_LENGTH} characters."})
    try:
        compiled = pattern_compile(pattern, case_sensitive=case_sensitive)
    except re2.error as exc:
        raise ValidationError({"pattern": _message(exc, pattern)}) from None
    size = compiled.programsize
    if size > MAX_PROGRAM_SIZE:
        raise ValidationError(
            {
                "pattern": f"The pattern compiles to {size:,} instructions, over the "
                f"{MAX_PROGRAM_SIZE:,} Hunter allows: split it into several rules or use "
                "smaller repetition counts."
            }
        )
    for probe in _EMPTY_PROBES:
        if any(m.end() == m.start() for m in compiled.finditer(probe)):
            raise ValidationError(
                {
                    "pattern": "The pattern matches an empty message (it can match the empty "
                    "string, so it would match every message): make at least one character "
                    "required."
                }
            )
