"""The messages a language model gets for one reply.

A system prompt for the domain, the knowledge entries recall found (numbered, with their
titles, and ``GROUNDING``: answer only from them when they answer the message, copy the
facts exactly, cite them as [n]), the recent conversation (bounded by count and size),
and the user's message, which is already redacted by the inspect stage: this module
never sees the original text, and sends ``ReplyRequest.message`` exactly as it is.
"""

from __future__ import annotations

import re

from chat.backends.base import KnowledgeHit, ReplyRequest
from chat.conf import chat_settings

BASE_PROMPT = (
    "You are Grace, a helpful, honest assistant. Answer clearly and briefly. "
    "If you do not know, say so. Text like [REDACTED] was removed for safety; "
    "never ask for it."
)

DOMAIN_PROMPTS = {
    "all": "",
    "core": "The conversation is about Grace itself: how it works and how to use it.",
    "knowledge": "Answer from the knowledge entries given as context where they apply.",
    "ml": "The conversation is about machine learning; be precise about methods and limits.",
    "security": (
        "The conversation is about security. Give defensive advice only; never help with "
        "attacks, and never repeat secrets."
    ),
    "transcendence": "The conversation is reflective and philosophical; be thoughtful.",
}

GROUNDING = (
    "Knowledge entries found for this message follow. When they answer it, answer only "
    "from them: copy numbers, names, times and prices exactly as written, add nothing they "
    "do not say, and cite each entry you use by its number, like [1]. When they do not "
    "answer it, say that you do not know, or answer without them if it is small talk."
)
CITATION = re.compile(r"\[(\d{1,2})\]")

KNOWLEDGE_MAX_HITS = 5
KNOWLEDGE_MAX_CHARS = 800
HISTORY_MAX_CHARS = 1000


def cited_hits(text: str, hits: list[KnowledgeHit]) -> list[KnowledgeHit]:
    """The entries of ``hits`` (numbered from 1 in the prompt) that ``text`` cites as [n]
    or names by title, in their order."""
    given = hits[:KNOWLEDGE_MAX_HITS]
    numbers = {int(n) for n in CITATION.findall(text)}
    lowered = text.lower()
    return [
        hit
        for n, hit in enumerate(given, 1)
        if n in numbers or (len(hit.title) > 3 and hit.title.lower() in lowered)
    ]


def system_prompt(domain: str, prompts: dict[str, str] | None = None) -> str:
    extra = (prompts or DOMAIN_PROMPTS).get(domain, "")
    return f"{BASE_PROMPT} {extra}".strip()


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def prompt_messages(
    request: ReplyRequest,
    *,
    prompts: dict[str, str] | None = None,
    max_history: int | None = None,
    max_chars: int | None = None,
) -> list[dict[str, str]]:
    """OpenAI-style messages: system (+ knowledge), recent history, the message last.

    The oldest history goes first when the whole prompt would pass ``max_chars``; the
    system prompt, the knowledge and the message are always kept.
    """
    if max_history is None:
        max_history = chat_settings.REPLY_HISTORY_MESSAGES
    if max_chars is None:
        max_chars = chat_settings.REPLY_PROMPT_MAX_CHARS
    system = system_prompt(request.domain, prompts)
    hits = request.knowledge[:KNOWLEDGE_MAX_HITS]
    if hits:
        entries = "\n\n".join(
            f"[{n}] {_clip(hit.title, 200)}\n{_clip(hit.body, KNOWLEDGE_MAX_CHARS)}"
            for n, hit in enumerate(hits, 1)
        )
        system += f"\n\n{GROUNDING}\n\n{entries}"
    recent = request.history[-max_history:] if max_history > 0 else []
    history = [
        {"role": item["role"], "content": _clip(item["content"], HISTORY_MAX_CHARS)}
        for item in recent
        if item.get("role") in ("user", "assistant") and item.get("content")
    ]
    budget = max_chars - len(system) - len(request.message)
    while history and sum(len(item["content"]) for item in history) > budget:
        history.pop(0)
    return [
        {"role": "system", "content": system},
        *history,
        {"role": "user", "content": request.message},
    ]
