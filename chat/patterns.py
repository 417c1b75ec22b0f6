"""Hunter's rule patterns: how they compile and what makes one unusable. Used by the
``SecurityRule`` model's validation and by Hunter (chat/security.py)."""

from __future__ import annotations

from typing import Any

import regex
from django.core.exceptions import ValidationError

MAX_PATTERN_LENGTH = 5000


def pattern_compile(pattern: str, *, case_sensitive: bool = False) -> Any:
    """Python ``re`` syntax (``regex`` VERSION0), case-insensitive unless asked."""
    flags = regex.VERSION0 if case_sensitive else regex.VERSION0 | regex.IGNORECASE
    return regex.compile(pattern, flags)


def pattern_validate(pattern: str, *, case_sensitive: bool = False) -> None:
    """Raise ``ValidationError`` (on the ``pattern`` field) for an unusable pattern."""
    if not pattern or not pattern.strip():
        raise ValidationError({"pattern": "The pattern is empty."})
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValidationError({"pattern": f"The pattern is over {MAX_PATTERN_LENGTH} characters."})
    try:
        compiled = pattern_compile(pattern, case_sensitive=case_sensitive)
    except (regex.error, ValueError, OverflowError) as exc:
        raise ValidationError({"pattern": f"Not a valid regular expression: {exc}"}) from None
    try:
        if compiled.search("", timeout=0.1) is not None:
            raise ValidationError({"pattern": "The pattern matches an empty message."})
    except TimeoutError:
        raise ValidationError({"pattern": "The pattern is too slow to run."}) from None
