"""The content words of a text: what knowledge search ranks on and what the fallback
backend matches knowledge entries with; and their crude stems, which knowledge search
uses to say how much of a question an entry covers."""

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


SUFFIXES = ("ingly", "edly", "ings", "ing", "ies", "ied", "ed", "es", "er", "ly", "s")
DOUBLED = re.compile(r"([b-df-hj-np-tv-z])\1$")


def term_stem(word: str) -> str:
    """A crude stem that is the same for "ship", "shipping" and "shipped", "prune" and
    "pruning", "refund" and "refunds" (FTS5's porter stemmer decides what matches;
    this only measures how much of a question an entry covers)."""
    word = word.lower()
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and DOUBLED.search(word):
        word = word[:-1]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def text_stems(text: str) -> frozenset[str]:
    """The stems of every word of ``text``."""
    return frozenset(term_stem(word) for word in set(WORD.findall(text.lower())))
