"""How facts from the knowledge base reach a reply, shared by the backends.

A small embedded model garbles the facts it is given (SmolLM2-135M invented prices,
distances and a phone number that were in its prompt), while quoting the knowledge
is right whenever recall found the right entry. So:

- ``confident_hits``: the entries recall found that are worth quoting: they cover enough
  of the question's words (by stem), or search scored them at least
  ``GRACE_KNOWLEDGE_MIN_RELEVANCE`` on its 0..1 scale (the line recall itself draws:
  hybrid search bridges paraphrases that share no word with the entry);
- ``knowledge_answer``: the reply that quotes them, each under its title, with the
  sentences of a long entry that match the question best and the source's hard line
  breaks joined;
- ``arithmetic_answer``: "What is 2+2?" answered exactly, without a model;
- ``trim_to_sentence``: a reply cut by its token budget or deadline ends at its last
  complete sentence; ``SentenceGate`` does it while streaming (near the end of its
  budget it holds back the incomplete sentence), so what streamed is the reply;
- ``sources_of``: ``metadata.sources`` for the entries a reply used.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from typing import Any

from chat.backends.base import KnowledgeHit, TokenCallback
from chat.conf import chat_settings
from chat.terms import query_terms

# Share of the message's content words an entry must contain to be quoted: lower for
# questions, higher for statements (which rarely ask for the knowledge base).
MIN_COVERAGE = 0.5
MIN_COVERAGE_STATEMENT = 0.8
# Search scores below this never count without shared words, whatever the setting.
MIN_SCORE = 0.1
# A second entry is quoted too when its score is at least this share of the best one's.
SECOND_SHARE = 0.8
QUOTE_CHARS = 700
# A prose paragraph longer than this is quoted sentence by sentence.
SENTENCE_UNIT_CHARS = 300

QUESTION = re.compile(
    r"\?|^\s*(how|what|what's|whats|where|when|why|which|who|can|could|does|do|is|are|"
    r"should|tell|explain|describe|show|list|help)\b",
    re.IGNORECASE,
)
SUFFIXES = ("ingly", "edly", "ings", "ing", "ies", "ied", "ed", "es", "er", "ly", "s")
# The end of a sentence: . ! ? or … (and a closing quote or bracket), then space or the end.
SENTENCE_END = re.compile(r"[.!?…][\"”’)\]]*(?=\s|$)")
# A line that must keep its own line: a list item, a heading, a table row, indented code.
KEEP_LINE = re.compile(r"^\s*([-*+•]\s|\d+[.)]\s|#|\||>|```|\s{4})")
ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "approx.", "no.", "vs.", "mr.", "mrs.", "dr.", "st.")


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


def coverage(hit: KnowledgeHit, terms: list[str]) -> float:
    """The share of ``terms`` found (by stem) in the entry's title and body."""
    haystack = _stems(f"{hit.title} {hit.body}")
    found = sum(1 for term in terms if stem(term) in haystack)
    return found / len(terms) if terms else 0.0


def covering_hits(message: str, knowledge: list[KnowledgeHit]) -> list[KnowledgeHit]:
    """The hits that share enough of the question's words to be worth quoting."""
    terms = query_terms(message)
    if not terms:
        return []
    need = min(2, len(terms))
    threshold = MIN_COVERAGE if QUESTION.search(message) else MIN_COVERAGE_STATEMENT
    good = []
    for hit in knowledge:
        share = coverage(hit, terms)
        if share >= threshold and share * len(terms) >= need:
            good.append(hit)
    return good


def confident_hits(
    message: str, knowledge: list[KnowledgeHit], *, limit: int = 2
) -> list[KnowledgeHit]:
    """At most ``limit`` entries to answer from, best first: the best hit when it covers
    the question's words or scores at least ``GRACE_KNOWLEDGE_MIN_RELEVANCE`` (never
    below ``MIN_SCORE``), and the next ones that cover
    the words too or score close to the best (``SECOND_SHARE``)."""
    if not knowledge or not query_terms(message):
        return []
    covering = {id(hit) for hit in covering_hits(message, knowledge)}
    minimum = max(MIN_SCORE, chat_settings.KNOWLEDGE_MIN_RELEVANCE)
    chosen: list[KnowledgeHit] = []
    for hit in knowledge:
        if id(hit) in covering:
            chosen.append(hit)
        elif hit.score >= minimum and (not chosen or hit.score >= chosen[0].score * SECOND_SHARE):
            chosen.append(hit)
        if len(chosen) >= limit:
            break
    return chosen


def unwrap(text: str) -> str:
    """Paragraphs with the source's hard line breaks joined (lists, tables, headings and
    code keep their lines)."""
    out: list[str] = []
    in_fence = False
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        lines = paragraph.split("\n")
        joined: list[str] = []
        for line in lines:
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
                joined.append(line)
                continue
            if (
                in_fence
                or not joined
                or KEEP_LINE.match(line)
                or joined[-1].rstrip().endswith(("```", "  "))
            ):
                joined.append(line.rstrip())
            elif KEEP_LINE.match(joined[-1]) and not line.startswith(" "):
                joined.append(line.rstrip())
            else:
                joined[-1] = f"{joined[-1].rstrip()} {line.strip()}"
        out.append("\n".join(joined))
    return "\n\n".join(out)


def sentences(text: str) -> list[str]:
    """``text`` split after each sentence end (each piece keeps its trailing space)."""
    pieces: list[str] = []
    start = 0
    for match in SENTENCE_END.finditer(text):
        end = match.end()
        before = text[start:end].lower()
        if before.endswith(ABBREVIATIONS) or re.search(r"\d\.$", before):
            continue  # "e.g." or "4.95" does not end a sentence
        while end < len(text) and text[end].isspace():
            end += 1
        pieces.append(text[start:end])
        start = end
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _ends_sentence(text: str) -> bool:
    return bool(re.search(r"[.!?…][\"”’)\]]*$", text)) and not text.lower().endswith(ABBREVIATIONS)


def trim_to_sentence(text: str) -> str:
    """``text`` without a trailing incomplete sentence (after its last sentence end or
    line break); with no complete sentence at all, the text and "…" (it stops there)."""
    stripped = text.rstrip()
    if not stripped or _ends_sentence(stripped):
        return stripped
    parts = sentences(stripped)
    kept = "".join(parts[:-1])
    tail = parts[-1]
    if "\n" in tail:  # a line break ends a list item or a heading
        kept += tail[: tail.rindex("\n")]
    kept = kept.rstrip()
    return kept if kept else stripped + "…"


def sentence_cut(text: str) -> int:
    """Where the last complete sentence of streamed ``text`` ends, or where its last line
    break begins; 0 when neither is there yet. A sentence end counts only once the space
    after it arrived ("4." may still become "4.95")."""
    cut = 0
    for match in SENTENCE_END.finditer(text):
        end = match.end()
        if end >= len(text) or not text[end].isspace():
            continue
        before = text[:end].lower()
        if before.endswith(ABBREVIATIONS):
            continue
        cut = end
    return max(cut, text.rstrip("\n").rfind("\n"), 0)


class SentenceGate:
    """Passes streamed pieces on as they come until ``hold()``; from then on it holds back
    the incomplete sentence at the end, so that a reply stopped there ends at its last
    complete sentence and what streamed is exactly the reply (``text``)."""

    def __init__(self, on_token: TokenCallback | None) -> None:
        self.on_token = on_token
        self.holding = False
        self.held: list[str] = []
        self.sent: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.sent)

    def hold(self) -> None:
        self.holding = True

    async def _send(self, piece: str) -> None:
        if piece:
            self.sent.append(piece)
            if self.on_token is not None:
                await self.on_token(piece)

    async def __call__(self, piece: str) -> None:
        if not self.holding:
            await self._send(piece)
            return
        self.held.append(piece)
        held = "".join(self.held)
        cut = sentence_cut(held)
        if not cut:
            return
        pieces, self.held = self.held, []
        size = 0
        for index, one in enumerate(pieces):
            if size + len(one) <= cut:
                await self._send(one)
                size += len(one)
                continue
            await self._send(one[: cut - size])
            rest = [one[cut - size :], *pieces[index + 1 :]]
            self.held = [p for p in rest if p]
            break

    async def finish(self, *, complete: bool) -> None:
        """The reply ended: all of it when ``complete``, else up to its last sentence (all
        of it and "…" when no sentence ended at all)."""
        pieces, self.held = self.held, []
        held = "".join(pieces)
        ends = _ends_sentence(held.rstrip())
        if complete or ends or not self.text.strip():
            if not complete:  # trailing space dropped; "…" when no sentence ended
                while pieces and not pieces[-1].strip():
                    pieces.pop()
                if pieces:
                    pieces[-1] = pieces[-1].rstrip() + ("" if ends else "…")
            for piece in pieces:
                await self._send(piece)


def _units(text: str) -> list[tuple[int, int, str]]:
    """(paragraph, line, piece): code blocks whole, then each line (a list item, a
    paragraph) whole when short, else sentence by sentence."""
    units: list[tuple[int, int, str]] = []
    for number, paragraph in enumerate(p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        if paragraph.startswith("```"):
            units.append((number, 0, paragraph))
            continue
        for line_number, line in enumerate(paragraph.split("\n")):
            if not line.strip():
                continue
            if len(line) <= SENTENCE_UNIT_CHARS:
                units.append((number, line_number, line))
            else:
                units.extend((number, line_number, s.strip()) for s in sentences(line) if s.strip())
    return units


def _quote(hit: KnowledgeHit, terms: list[str]) -> str:
    """The entry's text (unwrapped), or for a long one the lines and sentences that hold
    most of ``terms`` (prose, then shorter ones first among equals), in their order, up to
    ``QUOTE_CHARS`` ("…" where it skips)."""
    text = unwrap(hit.body)
    if len(text) <= QUOTE_CHARS:
        return text
    stems = {stem(t) for t in terms}
    units = _units(text)
    scores = [len(stems & _stems(piece)) for _, _, piece in units]
    order = sorted(
        range(len(units)),
        key=lambda i: (
            -scores[i],
            units[i][2].startswith("```"),  # prose says it; code shows it
            len(units[i][2]) > SENTENCE_UNIT_CHARS,
            i,
        ),
    )
    chosen: list[int] = []
    size = 0
    for index in order:
        if chosen and scores[index] == 0:
            break
        length = len(units[index][2]) + 1
        if size + length > QUOTE_CHARS:
            continue
        chosen.append(index)
        size += length
    if not chosen:  # every piece is longer than a quote: the start of the first
        return trim_to_sentence(units[0][2][:QUOTE_CHARS])
    out = ""
    previous: int | None = None
    for index in sorted(chosen):
        paragraph, line, piece = units[index]
        if previous is None:
            out = piece
        else:
            before = units[previous]
            if before[:2] == (paragraph, line):
                out += (" " if index == previous + 1 else " … ") + piece
            elif before[0] == paragraph:
                out += "\n" + piece
            else:
                out += "\n\n" + piece
        previous = index
    return out


def knowledge_answer(message: str, hits: list[KnowledgeHit]) -> str:
    """The reply quoting ``hits``: each under its title in bold."""
    terms = query_terms(message)
    parts = ["Here is what I know about that:"]
    for hit in hits:
        parts.append(f"**{hit.title}**\n{_quote(hit, terms)}")
    return "\n\n".join(parts)


def sources_of(hits: list[KnowledgeHit]) -> list[dict[str, Any]]:
    """``metadata.sources``: each entry used, as {title, source, score}."""
    return [
        {
            "title": hit.title,
            "source": str(getattr(hit, "source", "") or ""),
            "score": round(float(hit.score), 4),
        }
        for hit in hits
    ]


# --- Arithmetic --------------------------------------------------------------------------

ARITHMETIC = re.compile(
    r"^\s*(?:(?:what\s*(?:is|'s|’s)|whats|how\s+much\s+is|calculate|compute|evaluate|"
    r"please\s+calculate|tell\s+me)\s+)?"
    r"(?P<expr>[-+*/×÷x^().\d\s]+?)\s*(?:=\s*)?\??\s*$",
    re.IGNORECASE,
)
OPERATORS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 10**6):
            raise ValueError("too large")
        return float(OPERATORS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in OPERATORS:
        return float(OPERATORS[type(node.op)](_evaluate(node.operand)))
    raise ValueError("not arithmetic")


def arithmetic_answer(message: str) -> str | None:
    """ "What is 2+2?" -> "2 + 2 = 4." for plain arithmetic on numbers; else None."""
    match = ARITHMETIC.match(message)
    if not match:
        return None
    expr = match.group("expr").strip()
    if not re.search(r"\d", expr) or not re.search(r"\d\s*[-+*/×÷x^]\s*[-+(\d.]", expr):
        return None
    source = expr.replace("×", "*").replace("÷", "/").replace("^", "**")
    source = re.sub(r"(?<=[\d)\s])x(?=[\s\d(])", "*", source)
    if len(source) > 80:
        return None
    try:
        value = _evaluate(ast.parse(source, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    if value == int(value) and abs(value) < 1e15:
        shown = str(int(value))
    else:
        shown = f"{value:.6g}"
    pretty = re.sub(r"\s*([-+*/×÷^])\s*", r" \1 ", expr).replace("  ", " ").strip()
    pretty = re.sub(r"^- ", "-", pretty)
    return f"{pretty} = {shown}."
