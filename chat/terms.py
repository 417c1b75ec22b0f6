"""The content words of a text: what knowledge search ranks on and what the fallback
backend matches knowledge entries with."""

from __future__ import annotations

import re

MAX_TERMS = 12

WORD = re.compile(r"[^\W_]+", re.UNICODE)
MARKER = re.compile(r"\[REDACTED:\w+\]")
STOPWORDS = frozenset(
    """a about above after again all am an and any are as at be been being below between
    both but by can could did do does doing done down during each few for from further
    get got had has have having he her here hers him his how i if in into is it its
    itself just know let like me more most my myself no nor not now of off on once only
    or other our ours out over own please same she should so some such tell than that
    the their theirs them then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you
    your yours yourself explain describe give show want need""".split()
)


def query_terms(text: str) -> list[str]:
    """The content words of ``text``: lower-case, no stopwords, no duplicates."""
    terms: list[str] = []
    for word in WORD.findall(MARKER.sub(" ", text).lower()):
        if len(word) < 2 or word in STOPWORDS or word in terms:
            continue
        terms.append(word)
    return terms[:MAX_TERMS]
