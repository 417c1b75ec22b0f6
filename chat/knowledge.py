"""Knowledge: hybrid search (keywords and meaning). Getting entries in (embedding,
ingesting files): ``chat.ingest``.

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
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.db import connections
from django.db.models import Q

from chat.backends.base import KnowledgeHit
from chat.conf import chat_settings
from chat.embeddings import InvalidEmbeddingsBackend, embeddings_backend
from chat.embeddings.base import (
    EmbeddingsBackend,
    EmbeddingsError,
    Vectors,
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
    """(count, last update, sum of ids) of the entries: one aggregate per search, in SQL
    written once (the ORM took 0.3 ms to build it, the database 0.01 ms to run it)."""
    connection = connections[using]
    table = connection.ops.quote_name(KnowledgeEntry._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(id), MAX(updated), SUM(id) FROM {table}")  # noqa: S608
        row = cursor.fetchone()
    return (row[0], row[1], row[2])


def _index(using: str, model_id: str, fingerprint: tuple[Any, ...] | None = None) -> _Index:
    """The cached index of ``using``'s entries (vectors of ``model_id``), rebuilt when the
    entries changed (``fingerprint``: read now unless given)."""
    if fingerprint is None:
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
    fingerprint, keyword_ids = _fingerprint_and_keywords(terms, using)
    index = _index(using, backend.model_id if backend else "", fingerprint)
    if not index.rows:
        return []
    query = None
    if backend is not None and index.vector_ids and text.strip():
        query = _query_vector(backend, text, index)
    if not terms and query is None:
        return []
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


def _fingerprint_and_keywords(
    terms: list[str], using: str
) -> tuple[tuple[Any, ...] | None, list[int]]:
    """The entries' fingerprint and the ids full-text search finds for any of ``terms``
    (best first), in one statement on SQLite and PostgreSQL (the fingerprint's row, then
    the hits', ``UNION ALL``): one round trip per search instead of two. Elsewhere the
    fingerprint is None (``_index`` reads it) and the search a statement of its own."""
    vendor = connections[using].vendor
    if not terms:
        return None, []
    connection = connections[using]
    if vendor == "sqlite":
        search, params = _search_sqlite(terms, KEYWORD_CANDIDATES)
    elif vendor == "postgresql":
        search, params = _search_postgresql(terms, KEYWORD_CANDIDATES, connection)
    else:
        return None, _search_plain(terms, KEYWORD_CANDIDATES, using)
    table = connection.ops.quote_name(KnowledgeEntry._meta.db_table)
    sql = (
        f"SELECT 0, COUNT(id), MAX(updated), SUM(id) FROM {table} "  # noqa: S608
        f"UNION ALL SELECT 1, hit, NULL, NULL FROM ({search}) hits"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    fingerprint = next(tuple(row[1:]) for row in rows if row[0] == 0)
    return fingerprint, [row[1] for row in rows if row[0] == 1]


def _search_sqlite(terms: list[str], limit: int) -> tuple[str, list[Any]]:
    """SQLite FTS5: the entries matching any of the terms, best (``bm25``) first, as a
    subquery with one column, ``hit``."""
    match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
    sql = (
        f"SELECT rowid AS hit FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s "  # noqa: S608
        f"ORDER BY bm25({FTS_TABLE}, 4.0, 1.0) LIMIT %s"
    )
    return sql, [match, limit]


def _search_postgresql(terms: list[str], limit: int, connection: Any) -> tuple[str, list[Any]]:
    """PostgreSQL full-text search: ``ts_rank`` of the title (weight A) and the body (B)
    against any of the terms, best first, as a subquery with one column, ``hit``. The
    statement Django's ``SearchVector``, ``SearchQuery`` and ``SearchRank`` would build,
    written once (building it with the ORM cost more than 1 ms of CPU per search), over
    the stored, GIN-indexed ``search_vector`` (migration 0011) instead of a vector
    computed for every entry on every search."""
    table = connection.ops.quote_name(KnowledgeEntry._meta.db_table)
    query = "(" + " || ".join(["plainto_tsquery('english'::regconfig, %s)"] * len(terms)) + ")"
    sql = (
        f"SELECT id AS hit FROM (SELECT id, ts_rank(search_vector, {query}) AS rank "  # noqa: S608
        f"FROM {table} WHERE search_vector @@ {query}) ranked "
        "WHERE rank > 0 ORDER BY rank DESC, id LIMIT %s"
    )
    return sql, [*terms, *terms, limit]


def _search_plain(terms: list[str], limit: int, using: str) -> list[int]:
    condition = Q()
    for term in terms:
        condition |= Q(title__icontains=term) | Q(body__icontains=term)
    return list(
        KnowledgeEntry.objects.using(using).filter(condition).values_list("id", flat=True)[:limit]
    )
