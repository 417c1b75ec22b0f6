"""Knowledge: ranked full-text search and ingestion of .md/.txt files.

Search uses SQLite FTS5 ranked by bm25 (the ``chat_knowledge_fts`` table and its
triggers are made by migration 0002, on SQLite only) and PostgreSQL full-text search
(``SearchRank``) on PostgreSQL; any other engine gets a plain word match.

Ingestion splits Markdown at its headings (a chunk per section, titled with the heading
path) and text files at blank-line blocks; it is idempotent per source: unchanged chunks
stay, new ones are added, chunks no longer in the file are removed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connections, transaction
from django.db.models import Q

from chat.backends.base import KnowledgeHit
from chat.models import KnowledgeEntry
from chat.terms import query_terms

logger = logging.getLogger(__name__)

FTS_TABLE = "chat_knowledge_fts"
TEXT_CHUNK_CHARS = 2000
STARTER_DIR = Path(__file__).resolve().parent / "knowledge"
STARTER_PREFIX = "starter:"

def knowledge_search(
    *, text: str, domain: str = "all", limit: int = 3, using: str = "default"
) -> list[KnowledgeHit]:
    """The best ``limit`` entries for ``text``, best first (entries of ``domain`` first
    among equals when a domain is given)."""
    terms = query_terms(text)
    if not terms:
        return []
    vendor = connections[using].vendor
    if vendor == "sqlite":
        hits = _search_sqlite(terms, limit * 3, using)
    elif vendor == "postgresql":
        hits = _search_postgresql(terms, limit * 3, using)
    else:
        hits = _search_plain(terms, limit * 3, using)
    if domain != "all":  # the domain's own entries, then general ones, then the rest
        rank = {domain: 0, "all": 1}
        hits.sort(key=lambda pair: (rank.get(pair[1], 2), -pair[0].score))
    return [hit for hit, _ in hits[:limit]]


def _search_sqlite(terms: list[str], limit: int, using: str) -> list[tuple[KnowledgeHit, str]]:
    match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
    sql = (
        f"SELECT e.id, e.title, e.body, e.domain, bm25({FTS_TABLE}, 4.0, 1.0) AS rank "  # noqa: S608
        f"FROM {FTS_TABLE} JOIN chat_knowledgeentry e ON e.id = {FTS_TABLE}.rowid "
        f"WHERE {FTS_TABLE} MATCH %s ORDER BY rank LIMIT %s"
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [match, limit])
        rows = cursor.fetchall()
    # bm25() is lower-is-better and negative; the score is its negation.
    return [(KnowledgeHit(title, body, -rank, pk), dom) for pk, title, body, dom, rank in rows]


def _search_postgresql(
    terms: list[str], limit: int, using: str
) -> list[tuple[KnowledgeHit, str]]:
    from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

    query = SearchQuery(terms[0], config="english")
    for term in terms[1:]:
        query |= SearchQuery(term, config="english")
    vector = SearchVector("title", weight="A", config="english") + SearchVector(
        "body", weight="B", config="english"
    )
    rows = (
        KnowledgeEntry.objects.using(using)
        .annotate(rank=SearchRank(vector, query))
        .filter(rank__gt=0)
        .order_by("-rank", "id")
        .values_list("id", "title", "body", "domain", "rank")[:limit]
    )
    return [(KnowledgeHit(t, b, float(r), pk), d) for pk, t, b, d, r in rows]


def _search_plain(terms: list[str], limit: int, using: str) -> list[tuple[KnowledgeHit, str]]:
    condition = Q()
    for term in terms:
        condition |= Q(title__icontains=term) | Q(body__icontains=term)
    scored = []
    for entry in KnowledgeEntry.objects.using(using).filter(condition)[:200]:
        haystack = f"{entry.title} {entry.title} {entry.body}".lower()
        score = float(sum(haystack.count(term) for term in terms))
        scored.append((KnowledgeHit(entry.title, entry.body, score, entry.pk), entry.domain))
    scored.sort(key=lambda pair: -pair[0].score)
    return scored[:limit]


# --- Ingestion -------------------------------------------------------------------------

HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@dataclass(frozen=True)
class Chunk:
    title: str
    body: str


def chunks_markdown(text: str, *, default_title: str) -> list[Chunk]:
    """One chunk per section; a section's title is its heading path ("A › B")."""
    chunks: list[Chunk] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            title = " › ".join(name for _, name in path) or default_title
            chunks.append(Chunk(title[:300], body))
        lines.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        heading = None if in_fence else HEADING.match(line)
        if heading:
            flush()
            level = len(heading.group(1))
            path = [(lvl, name) for lvl, name in path if lvl < level]
            path.append((level, heading.group(2).strip()))
        else:
            lines.append(line)
    flush()
    return chunks


def chunks_text(text: str, *, default_title: str) -> list[Chunk]:
    """Blank-line blocks gathered into chunks of about ``TEXT_CHUNK_CHARS``."""
    chunks: list[Chunk] = []
    current: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        if current and sum(len(b) for b in current) + len(block) > TEXT_CHUNK_CHARS:
            chunks.append(Chunk(default_title, "\n\n".join(current)))
            current = []
        current.append(block)
    if current:
        chunks.append(Chunk(default_title, "\n\n".join(current)))
    if len(chunks) > 1:
        chunks = [Chunk(f"{c.title} ({i})", c.body) for i, c in enumerate(chunks, 1)]
    return chunks


def chunks_file(path: Path) -> list[Chunk]:
    text = path.read_text(encoding="utf-8")
    title = path.stem.replace("_", " ").replace("-", " ").strip().capitalize()
    if path.suffix.lower() in {".md", ".markdown"}:
        return chunks_markdown(text, default_title=title)
    return chunks_text(text, default_title=title)


@dataclass
class IngestReport:
    added: int = 0
    unchanged: int = 0
    removed: int = 0


def knowledge_ingest(
    *, source: str, chunks: Iterable[Chunk], domain: str = "all", model: Any = None
) -> IngestReport:
    """Make ``source``'s entries exactly ``chunks`` (idempotent). ``model`` lets a
    migration pass its historical model."""
    if model is None:
        model = KnowledgeEntry
    report = IngestReport()
    wanted: dict[str, Chunk] = {}
    for chunk in chunks:
        wanted.setdefault(KnowledgeEntry.hash_content(chunk.title, chunk.body), chunk)
    with transaction.atomic():
        existing = dict(model.objects.filter(source=source).values_list("content_hash", "id"))
        stale = [pk for digest, pk in existing.items() if digest not in wanted]
        if stale:
            report.removed = model.objects.filter(pk__in=stale).delete()[0]
        for digest, chunk in wanted.items():
            if digest in existing:
                report.unchanged += 1
                continue
            model.objects.create(
                title=chunk.title, body=chunk.body, domain=domain, source=source,
                content_hash=digest,
            )
            report.added += 1
    return report


def knowledge_files(paths: Iterable[Path]) -> list[Path]:
    """The .md/.markdown/.txt files named or found (recursively) under ``paths``."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.suffix.lower() in {".md", ".markdown", ".txt"}
            )
        else:
            found.append(path)
    return found


def knowledge_seed(*, model: Any = None) -> IngestReport:
    """Load the starter knowledge set shipped in chat/knowledge/ (domain ``core``)."""
    total = IngestReport()
    for path in sorted(STARTER_DIR.glob("*.md")):
        report = knowledge_ingest(
            source=STARTER_PREFIX + path.name, chunks=chunks_file(path), domain="core",
            model=model,
        )
        total.added += report.added
        total.unchanged += report.unchanged
        total.removed += report.removed
    return total
