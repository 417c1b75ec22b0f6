"""The deterministic fallback: answers without any model, in well under a millisecond.

In order of preference it:

1. answers greetings, thanks and farewells;
2. answers "what did I say / do you remember ..." from the conversation history;
3. answers plain arithmetic ("What is 2+2?") exactly;
4. answers questions from the best knowledge entries recall found, quoting them with
   their titles (``chat.backends.grounding``: an entry counts when it covers enough of
   the question's words or search scored it high); they are the reply's ``sources``;
5. otherwise says honestly that it does not know yet, with
   ``result.extra["unanswered"] = True`` (the pipeline records a ``KnowledgeGap``).

It hands its reply to ``on_token`` as one piece (``text_stream``: the text is whole
already).
"""

from __future__ import annotations

import re
import time

from chat.backends.base import (
    KnowledgeHit,
    ReplyBackend,
    ReplyRequest,
    ReplyResult,
    TokenCallback,
    text_stream,
)
from chat.backends.grounding import arithmetic_answer, confident_hits, knowledge_answer

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

UNANSWERED = (
    "I don't know that yet. I have noted the question so that an operator can add the "
    "answer to my knowledge. You can ask me about using Grace, its settings, its commands "
    "or the executor."
)


def small_talk(message: str) -> bool:
    """A greeting, thanks or a farewell: no question for the knowledge base."""
    return bool(GREETING.match(message) or THANKS.match(message) or FAREWELL.match(message))


def relevant_hits(message: str, knowledge: list[KnowledgeHit]) -> list[KnowledgeHit]:
    """The hits worth quoting for ``message`` (``grounding.confident_hits``)."""
    return confident_hits(message, knowledge)


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
    arithmetic = arithmetic_answer(message)
    if arithmetic is not None:
        return arithmetic, {"intent": "arithmetic"}
    hits = confident_hits(message, request.knowledge)
    if hits:
        return knowledge_answer(message, hits), {"intent": "knowledge", "sources": hits}
    return UNANSWERED, {"intent": "unknown", "unanswered": True}


class FallbackBackend(ReplyBackend):
    """Always available; never fails; no model, no network, no database."""

    async def generate(
        self, request: ReplyRequest, *, on_token: TokenCallback | None = None
    ) -> ReplyResult:
        started = time.monotonic()
        text, extra = fallback_answer(request)
        used = extra.pop("sources", [])
        hits = (
            [hit for hit in used if isinstance(hit, KnowledgeHit)] if isinstance(used, list) else []
        )
        first_token_ms = await text_stream(text, on_token, started=started)
        return ReplyResult(
            text=text,
            backend=self.alias,
            model="fallback",
            latency_ms=int((time.monotonic() - started) * 1000),
            first_token_ms=first_token_ms,
            extra=extra,
            sources=hits,
        )
