"""The deterministic fallback: answers without any model, in well under a millisecond.

In order of preference it:

1. answers greetings, thanks and farewells;
2. answers "what did I say / do you remember ..." from the conversation history;
3. answers questions from the best knowledge entries recall found, quoting them with
   their titles (an entry counts when it covers enough of the question's words);
4. otherwise says honestly that it does not know yet, with
   ``result.extra["unanswered"] = True`` (the pipeline records a ``KnowledgeGap``).

It streams its reply word by word through ``on_token`` like a model would.
"""

from __future__ import annotations

import functools
import re
import time

from chat.backends.base import (
    KnowledgeHit,
    ReplyBackend,
    ReplyRequest,
    ReplyResult,
    TokenCallback,
)
from chat.terms import query_terms

GREETING = re.compile(
    r"^\s*(hi|hello|hey|hiya|howdy|greetings|good\s+(morning|afternoon|evening|day)|yo)\b"
    r"[\s!,.]*(grace|there|everyone|all)?[\s!,.?]*$",
    re.IGNORECASE,
)
THANKS = re.compile(
    r"^\s*(thanks|thank\s+you|thx|ty|cheers|much\s+appreciated|great,?\s+thanks)\b[^?]{0,40}$",
    re.IGNORECASE,
)
FAREWELL = re.compile(
    r"^\s*(bye|goodbye|good\s*bye|see\s+you|see\s+ya|farewell|good\s+night|later|ciao)\b"
    r"[^?]{0,40}$",
    re.IGNORECASE,
)
RECALL = re.compile(
    r"\b(what\s+did\s+i\s+(just\s+)?(say|said|tell|write|ask|mention)|"
    r"what\s+(was|were)\s+my\s+(last|first|previous|earlier)?\s*(message|question|words)|"
    r"do\s+you\s+remember|what\s+do\s+you\s+remember|remind\s+me\s+what\s+i|"
    r"what\s+have\s+i\s+(said|told|asked))\b",
    re.IGNORECASE,
)

QUESTION = re.compile(
    r"\?|^\s*(how|what|what's|whats|where|when|why|which|who|can|could|does|do|is|are|"
    r"should|tell|explain|describe|show|list|help)\b",
    re.IGNORECASE,
)

EXCERPT_CHARS = 700
# Share of the message's content words a knowledge entry must contain to be quoted:
# lower for questions, higher for statements (which rarely ask for the knowledge base).
MIN_COVERAGE = 0.5
MIN_COVERAGE_STATEMENT = 0.8

UNANSWERED = (
    "I don't know that yet. I have noted the question so that an operator can add the "
    "answer to my knowledge. You can ask me about using Grace, its settings, its commands "
    "or the executor."
)


def _excerpt(hit: KnowledgeHit, terms: list[str]) -> str:
    """The paragraphs of ``hit`` that mention most of ``terms``, up to EXCERPT_CHARS."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", hit.body) if p.strip()]
    if not paragraphs:
        return ""
    scored = sorted(
        range(len(paragraphs)),
        key=lambda i: (-sum(t in paragraphs[i].lower() for t in terms), i),
    )
    chosen: list[int] = []
    size = 0
    for index in scored:
        if chosen and size + len(paragraphs[index]) > EXCERPT_CHARS:
            break
        chosen.append(index)
        size += len(paragraphs[index])
    text = "\n\n".join(paragraphs[i] for i in sorted(chosen))
    if len(text) > EXCERPT_CHARS:
        text = text[: EXCERPT_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return text


SUFFIXES = ("ingly", "edly", "ings", "ing", "ies", "ied", "ed", "es", "er", "ly", "s")


def stem(word: str) -> str:
    """A crude suffix strip, enough to match "boiling" with "boils" (FTS5 uses porter)."""
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@functools.lru_cache(maxsize=512)
def _stems(text: str) -> frozenset[str]:
    """The stems of ``text``'s words (entries repeat across replies: cached)."""
    return frozenset(stem(w) for w in set(re.findall(r"[^\W_]+", text.lower())))


def _coverage(hit: KnowledgeHit, terms: list[str]) -> float:
    """The share of ``terms`` found (by stem) in the entry's title and body."""
    haystack = _stems(f"{hit.title} {hit.body}")
    found = sum(1 for term in terms if stem(term) in haystack)
    return found / len(terms) if terms else 0.0


def relevant_hits(message: str, knowledge: list[KnowledgeHit]) -> list[KnowledgeHit]:
    """The hits that cover enough of the question to be worth quoting."""
    terms = query_terms(message)
    if not terms:
        return []
    need = min(2, len(terms))
    threshold = MIN_COVERAGE if QUESTION.search(message) else MIN_COVERAGE_STATEMENT
    good = []
    for hit in knowledge:
        coverage = _coverage(hit, terms)
        if coverage >= threshold and coverage * len(terms) >= need:
            good.append(hit)
    return good


def _from_history(message: str, history: list[dict[str, str]]) -> str:
    said = [m["content"] for m in history if m.get("role") == "user" and m.get("content")]
    said = [text for text in said if not RECALL.search(text)]
    if not said:
        return "This conversation has no earlier messages from you yet."
    if re.search(r"\bfirst\b", message, re.IGNORECASE):
        return f"Your first message in this conversation was: “{said[0]}”"
    recent = said[-3:]
    if len(recent) == 1:
        return f"You said: “{recent[0]}”"
    lines = "\n".join(f"- “{text}”" for text in recent)
    return f"Your most recent messages were:\n{lines}"


def fallback_answer(request: ReplyRequest) -> tuple[str, dict[str, object]]:
    """The reply text and its ``extra`` facts for ``request``."""
    message = request.message.strip()
    if GREETING.match(message):
        return (
            "Hello! I'm Grace. Ask me about using Grace, its settings and commands, or "
            "anything in my knowledge base.",
            {"intent": "greeting"},
        )
    if THANKS.match(message):
        return "You're welcome! Anything else I can help with?", {"intent": "thanks"}
    if FAREWELL.match(message):
        return "Goodbye! Come back any time.", {"intent": "farewell"}
    if RECALL.search(message):
        return _from_history(message, request.history), {"intent": "history"}
    hits = relevant_hits(message, request.knowledge)[:2]
    if hits:
        terms = query_terms(message)
        parts = ["Here is what I know about that:"]
        for hit in hits:
            parts.append(f"**{hit.title}**\n{_excerpt(hit, terms)}")
        return "\n\n".join(parts), {
            "intent": "knowledge",
            "sources": [{"title": h.title, "entry_id": h.entry_id} for h in hits],
        }
    return UNANSWERED, {"intent": "unknown", "unanswered": True}


class FallbackBackend(ReplyBackend):
    """Always available; never fails; no model, no network, no database."""

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        started = time.monotonic()
        text, extra = fallback_answer(request)
        first_token_ms = None
        if on_token is not None:
            for piece in re.findall(r"\S+\s*|\s+", text):
                await on_token(piece)
                if first_token_ms is None:
                    first_token_ms = int((time.monotonic() - started) * 1000)
        return ReplyResult(
            text=text,
            backend=self.alias,
            model="fallback",
            latency_ms=int((time.monotonic() - started) * 1000),
            first_token_ms=first_token_ms,
            extra=extra,
        )
