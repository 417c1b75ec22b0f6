"""Knowledge: hybrid search (keywords and meaning) and ingestion of .md/.txt files.

Search fuses two signals into one relevance in 0..1 per entry:

- keywords: SQLite FTS5 (the ``chat_knowledge_fts`` table and its triggers, migration
  0002) or PostgreSQL full-text search finds the entries that share words with the
  question; how much of the question an entry covers (each word weighted by how rare it
  is among the entries) is its keyword relevance;
- meaning: the cosine between the question's embedding and each entry's stored embedding
  of the configured model (``chat.embeddings``), numpy over every embedded entry, mapped
  to 0..1 between the model's ``similarity_floor`` and ``similarity_full``.

``relevance = 1 - (1 - meaning) * (1 - KEYWORD_WEIGHT * keywords)``: meaning ranks,
shared rare words raise an entry. An entry without an embedding of the configured model
(not embedded yet, or embedded by another model) is ranked by keywords alone until
``reembed_knowledge`` (or the next ingest or ``migrate``) embeds it: the request path
embeds only the question. Entries below ``GRACE_KNOWLEDGE_MIN_RELEVANCE`` are left out,
so a question the knowledge does not cover gets no hits.

The vectors, stems and titles of all entries are cached per process and database; one
cheap aggregate query per search (count, last update, sum of ids) tells whether another
process changed the entries, and the cache is rebuilt then.

Ingestion splits Markdown at its headings (a chunk per section, titled with the heading
path) and text files at blank-line blocks; it is idempotent per source: unchanged chunks
stay, new ones are added, chunks no longer in the file are removed; then the source's
entries without a current embedding are embedded.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.db import DatabaseError, connections, router, transaction
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from chat.backends.base import KnowledgeHit
from chat.conf import chat_settings
from chat.embeddings import InvalidEmbeddingsBackend, embeddings_backend
from chat.embeddings.base import (
    EmbeddingsBackend,
    EmbeddingsError,
    Vectors,
    vector_pack,
    vector_unpack,
)
from chat.models import KnowledgeEntry
from chat.terms import query_terms, term_stem, text_stems

logger = logging.getLogger(__name__)

FTS_TABLE = "chat_knowledge_fts"
TEXT_CHUNK_CHARS = 2000
STARTER_DIR = Path(__file__).resolve().parent / "knowledge"
STARTER_PREFIX = "starter:"

KEYWORD_CANDIDATES = 50
KEYWORD_WEIGHT = 0.5
"""How far keyword coverage raises an entry's relevance over its meaning alone."""
SEARCH_EMBED_TIMEOUT = 1.0
"""Seconds a search waits for the question's embedding (a remote backend) before it
answers by keyword alone."""
SEARCH_EMBED_PAUSE = 30.0
"""After a failed question embedding, seconds searches skip meaning (no wait per request
on a server that is down)."""
EMBED_BATCH = 64


def entry_text(title: str, body: str) -> str:
    """What is embedded for an entry: its heading path and its body."""
    return f"{title.replace(' › ', ': ')}\n{body}"


def knowledge_embedder() -> EmbeddingsBackend | None:
    """The configured embeddings backend, or None when there is none or it cannot load
    (the system check ``chat.E010`` says why)."""
    try:
        backend = embeddings_backend()
    except InvalidEmbeddingsBackend:
        return None
    return backend if backend.model_id else None


# --- The per-process index ---------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    title: str
    body: str
    domain: str
    source: str
    stems: frozenset[str]


@dataclass
class _Index:
    fingerprint: tuple[Any, ...]
    rows: dict[int, _Row]
    document_frequency: Counter[str]
    vector_ids: list[int]
    matrix: Vectors


_indexes: dict[tuple[str, str], _Index] = {}
_indexes_lock = threading.Lock()
_paused_until: dict[str, float] = {}


def _fingerprint(using: str) -> tuple[Any, ...]:
    found = KnowledgeEntry.objects.using(using).aggregate(
        count=Count("id"), last=Max("updated"), ids=Sum("id")
    )
    return (found["count"], found["last"], found["ids"])


def _index(using: str, model_id: str) -> _Index:
    """The cached index of ``using``'s entries (vectors of ``model_id``), rebuilt when the
    entries changed."""
    fingerprint = _fingerprint(using)
    key = (using, model_id)
    index = _indexes.get(key)
    if index is not None and index.fingerprint == fingerprint:
        return index
    with _indexes_lock:
        index = _indexes.get(key)
        if index is None or index.fingerprint != fingerprint:
            index = _index_build(using, model_id, fingerprint)
            _indexes[key] = index
        return index


def _index_build(using: str, model_id: str, fingerprint: tuple[Any, ...]) -> _Index:
    rows: dict[int, _Row] = {}
    frequency: Counter[str] = Counter()
    vector_ids: list[int] = []
    vectors: list[Vectors] = []
    entries = KnowledgeEntry.objects.using(using).values_list(
        "id", "title", "body", "domain", "source", "embedding", "embedding_model"
    )
    for pk, title, body, domain, source, embedding, embedded_by in entries.iterator():
        stems = text_stems(f"{title} {body}")
        rows[pk] = _Row(title, body, domain, source, stems)
        frequency.update(stems)
        if model_id and embedded_by == model_id and embedding:
            vector_ids.append(pk)
            vectors.append(vector_unpack(embedding))
    sizes = {len(v) for v in vectors}
    if len(sizes) > 1:  # a model id reused for another shape: trust none of them
        logger.warning("knowledge: %s vectors of several sizes %s; ignored", model_id, sizes)
        vector_ids, vectors = [], []
    matrix = np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    return _Index(fingerprint, rows, frequency, vector_ids, matrix)


def knowledge_cache_clear() -> None:
    """Forget the cached indexes (tests; a search rebuilds them anyway when rows change)."""
    with _indexes_lock:
        _indexes.clear()
        _paused_until.clear()


# --- Search ------------------------------------------------------------------------------


def knowledge_search(
    *, text: str, domain: str = "all", limit: int = 3, using: str = "default"
) -> list[KnowledgeHit]:
    """The best ``limit`` entries for ``text`` at least ``GRACE_KNOWLEDGE_MIN_RELEVANCE``
    relevant, best first (entries of ``domain``, then general ones, first when a domain is
    given); ``score`` is the relevance in 0..1."""
    terms = query_terms(text)
    backend = knowledge_embedder()
    index = _index(using, backend.model_id if backend else "")
    if not index.rows:
        return []
    query = None
    if backend is not None and index.vector_ids and text.strip():
        query = _query_vector(backend, text, index)
    if not terms and query is None:
        return []
    keyword_ids = _keyword_ids(terms, using) if terms else []
    relevance = _relevance(index, terms, keyword_ids, query, backend)
    minimum = chat_settings.KNOWLEDGE_MIN_RELEVANCE
    # Relevance saturates at 1; among equals the closer meaning and the more words shared
    # go first (``order``), then the older entry.
    ranked = sorted(
        (
            (score, order, pk)
            for pk, (score, order) in relevance.items()
            if score >= minimum and score > 0
        ),
        key=lambda item: (-item[0], -item[1], item[2]),
    )
    if domain != "all":  # the domain's own entries, then general ones, then the rest
        first = {domain: 0, "all": 1}
        ranked.sort(key=lambda item: first.get(index.rows[item[2]].domain, 2))
    hits = []
    for score, _, pk in ranked[:limit]:
        row = index.rows[pk]
        hits.append(KnowledgeHit(row.title, row.body, round(score, 4), pk, row.source))
    return hits


def _query_vector(backend: EmbeddingsBackend, text: str, index: _Index) -> Vectors | None:
    model_id = backend.model_id
    if _paused_until.get(model_id, 0.0) > time.monotonic():
        return None
    try:
        vector = backend.embed([text], timeout=SEARCH_EMBED_TIMEOUT)[0]
    except EmbeddingsError as exc:
        _paused_until[model_id] = time.monotonic() + SEARCH_EMBED_PAUSE
        logger.warning(
            "knowledge: the question could not be embedded (%s); keywords only for %gs",
            exc, SEARCH_EMBED_PAUSE,
        )
        return None
    if vector.shape[0] != index.matrix.shape[1]:
        logger.warning(
            "knowledge: %s gives %d dimensions, the stored vectors have %d; run "
            "manage.py reembed_knowledge", model_id, vector.shape[0], index.matrix.shape[1],
        )
        return None
    return vector


def _relevance(
    index: _Index,
    terms: list[str],
    keyword_ids: list[int],
    query: Vectors | None,
    backend: EmbeddingsBackend | None,
) -> dict[int, tuple[float, float]]:
    """``{entry id: (relevance in 0..1, order among equal relevance)}``."""
    keyword = _coverage(index, terms, keyword_ids)
    relevance = {pk: (value, value) for pk, value in keyword.items()}
    if query is None or backend is None:
        return relevance  # and for entries without a current vector below: keywords alone
    floor, full = backend.similarity_floor, backend.similarity_full
    closeness = (index.matrix @ query - floor) / max(full - floor, 1e-6)
    for pk, near in zip(index.vector_ids, closeness.tolist(), strict=True):
        shared = keyword.get(pk, 0.0)
        meaning = min(1.0, max(0.0, near))
        score = 1.0 - (1.0 - meaning) * (1.0 - KEYWORD_WEIGHT * shared)
        relevance[pk] = (score, near + KEYWORD_WEIGHT * shared)
    return relevance


def _coverage(index: _Index, terms: list[str], keyword_ids: list[int]) -> dict[int, float]:
    """For each entry keyword search found: the share of the question's words it holds,
    each word weighted by its rarity among the entries (inverse document frequency)."""
    if not terms or not keyword_ids:
        return {}
    total = len(index.rows)
    stems = [term_stem(term) for term in terms]
    weights = [
        math.log(1.0 + (total - index.document_frequency[s] + 0.5)
                 / (index.document_frequency[s] + 0.5))
        for s in stems
    ]
    whole = sum(weights) or 1.0
    coverage: dict[int, float] = {}
    for pk in keyword_ids:
        row = index.rows.get(pk)
        if row is not None:
            held = sum(w for s, w in zip(stems, weights, strict=True) if s in row.stems)
            coverage[pk] = held / whole
    return coverage


def _keyword_ids(terms: list[str], using: str) -> list[int]:
    """The entries full-text search finds for any of ``terms``, best first."""
    vendor = connections[using].vendor
    if vendor == "sqlite":
        return _search_sqlite(terms, KEYWORD_CANDIDATES, using)
    if vendor == "postgresql":
        return _search_postgresql(terms, KEYWORD_CANDIDATES, using)
    return _search_plain(terms, KEYWORD_CANDIDATES, using)


def _search_sqlite(terms: list[str], limit: int, using: str) -> list[int]:
    match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
    sql = (
        f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s "  # noqa: S608
        f"ORDER BY bm25({FTS_TABLE}, 4.0, 1.0) LIMIT %s"
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [match, limit])
        return [pk for (pk,) in cursor.fetchall()]


def _search_postgresql(terms: list[str], limit: int, using: str) -> list[int]:
    from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

    query = SearchQuery(terms[0], config="english")
    for term in terms[1:]:
        query |= SearchQuery(term, config="english")
    vector = SearchVector("title", weight="A", config="english") + SearchVector(
        "body", weight="B", config="english"
    )
    return list(
        KnowledgeEntry.objects.using(using)
        .annotate(rank=SearchRank(vector, query))
        .filter(rank__gt=0)
        .order_by("-rank", "id")
        .values_list("id", flat=True)[:limit]
    )


def _search_plain(terms: list[str], limit: int, using: str) -> list[int]:
    condition = Q()
    for term in terms:
        condition |= Q(title__icontains=term) | Q(body__icontains=term)
    return list(
        KnowledgeEntry.objects.using(using).filter(condition).values_list("id", flat=True)[:limit]
    )


# --- Embedding ---------------------------------------------------------------------------


@dataclass
class EmbedReport:
    embedded: int = 0
    remaining: int = 0
    """Entries still without a current embedding (after an error)."""
    model: str = ""
    error: str = ""


def knowledge_stale(*, using: str = "default") -> QuerySet[KnowledgeEntry]:
    """The entries without an embedding of the configured model (none when there is no
    embeddings backend)."""
    backend = knowledge_embedder()
    entries = KnowledgeEntry.objects.using(using)
    if backend is None:
        return entries.none()
    return entries.exclude(embedding_model=backend.model_id, embedding__isnull=False)


def knowledge_embed(
    *, entries: QuerySet[KnowledgeEntry] | None = None, using: str = "default",
    batch: int = EMBED_BATCH,
) -> EmbedReport:
    """Embed ``entries`` (default: every stale entry) with the configured backend, in
    batches; stops at the first failure and says how many are left."""
    backend = knowledge_embedder()
    if backend is None:
        return EmbedReport()
    queryset = knowledge_stale(using=using) if entries is None else entries
    pending = list(queryset.order_by("id").values_list("id", "title", "body"))
    report = EmbedReport(model=backend.model_id)
    for start in range(0, len(pending), batch):
        part = pending[start:start + batch]
        try:
            vectors = backend.embed([entry_text(title, body) for _, title, body in part])
        except EmbeddingsError as exc:
            report.error = str(exc)
            report.remaining = len(pending) - start
            logger.warning("knowledge: embedding failed, %d entries left: %s",
                           report.remaining, exc)
            break
        now = timezone.now()
        updates = [
            KnowledgeEntry(id=pk, embedding=vector_pack(vector),
                           embedding_model=backend.model_id, updated=now)
            for (pk, _, _), vector in zip(part, vectors, strict=True)
        ]
        KnowledgeEntry.objects.using(using).bulk_update(
            updates, ["embedding", "embedding_model", "updated"]
        )
        report.embedded += len(updates)
    return report


def knowledge_embed_after_migrate(*, using: str = "default", **kwargs: Any) -> None:
    """``post_migrate``: embed the entries migrations added (the starter knowledge) or
    that another model embedded. Never fails the migration: a backend that cannot embed
    is logged, and search uses keywords for those entries until ``reembed_knowledge``."""
    if not router.allow_migrate_model(using, KnowledgeEntry):
        return
    try:
        report = knowledge_embed(using=using)
    except DatabaseError as exc:  # the table is not there yet (migrating backwards)
        logger.info("knowledge: not embedded after migrate: %s", exc)
        return
    if report.embedded:
        logger.info("knowledge: embedded %d entries with %s", report.embedded, report.model)


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
    embedded: int = 0
    """Entries of the source given an embedding (the new ones, and any of another model)."""
    not_embedded: int = 0
    embed_error: str = ""

    def add(self, other: IngestReport) -> None:
        self.added += other.added
        self.unchanged += other.unchanged
        self.removed += other.removed
        self.embedded += other.embedded
        self.not_embedded += other.not_embedded
        self.embed_error = self.embed_error or other.embed_error


def knowledge_ingest(
    *, source: str, chunks: Iterable[Chunk], domain: str = "all", model: Any = None
) -> IngestReport:
    """Make ``source``'s entries exactly ``chunks`` (idempotent), then embed those without
    an embedding of the configured model. ``model`` lets a migration pass its historical
    model (nothing is embedded then: ``post_migrate`` does it)."""
    historical = model is not None and model is not KnowledgeEntry
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
    if not historical:  # outside the transaction: a remote backend may take a while
        embedded = knowledge_embed(entries=knowledge_stale().filter(source=source))
        report.embedded = embedded.embedded
        report.not_embedded = embedded.remaining
        report.embed_error = embedded.error
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
        total.add(
            knowledge_ingest(
                source=STARTER_PREFIX + path.name, chunks=chunks_file(path), domain="core",
                model=model,
            )
        )
    return total
