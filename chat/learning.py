"""Learning capture: redact personal data and secrets, classify what is left.

Sensitivity: ``red`` when secrets or card numbers were found, ``yellow`` for personal
data (emails, phone numbers) or a message Hunter flagged, ``green`` otherwise. The
redacted text is what a ``LearningRecord`` keeps; the original is never stored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# Not a piece of a longer digit run (an order number, a card that failed Luhn).
PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]?\d{3,4}[ .-]?\d{3,4}"
    r"(?![ .-]?\d)"
)
TOKEN = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}|grc_[A-Za-z0-9_-]{20,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,})\b"
    r"|\[REDACTED:secret\]"
)

RED_KINDS = {"card", "token"}
YELLOW_KINDS = {"email", "phone"}


def luhn_valid(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for index, char in enumerate(digits):
        value = int(char)
        if index % 2 == parity:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


@dataclass
class Capture:
    text: str
    redactions: Counter[str] = field(default_factory=Counter)

    def sensitivity(self, *, flagged: bool = False) -> str:
        kinds = set(self.redactions)
        if kinds & RED_KINDS:
            return "red"
        if kinds & YELLOW_KINDS or flagged:
            return "yellow"
        return "green"


def learning_redact(text: str) -> Capture:
    """Mask tokens, card numbers (Luhn-checked), emails and phone numbers."""
    counts: Counter[str] = Counter()

    def sub(
        kind: str, pattern: re.Pattern[str], value: str,
        check: Callable[[str], bool] | None = None,
    ) -> str:
        def replace(match: re.Match[str]) -> str:
            if check is not None and not check(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return f"[{kind.upper()}]"

        return pattern.sub(replace, value)

    text = sub("token", TOKEN, text)
    text = sub("card", CARD, text, lambda s: luhn_valid(re.sub(r"\D", "", s)))
    text = sub("email", EMAIL, text)
    text = sub("phone", PHONE, text)
    return Capture(text, counts)
