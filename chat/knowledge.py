"""Knowledge: hybrid search (keywords and meaning). Getting entries in (embedding,
ingesting files): ``chat.ingest``.

Search fuses two signals into one relevance in 0..1 per entry:

- keywords: SQLite FTS5 or PostgreSQL full-text search (their SQL: ``chat.knowledge_sql``)
  finds the entries that share words with the question; how much of the question an
  entry covers (each word weighted by how rare it is among the entries) is its keyword
  relevance;
- meaning: the cosine between the question's embedding and each entry's stored embedding
  of the configured model (``chat.embeddings``), numpy over every embedded entry, mapped
  to 0..1 between the model's ``similarity_floor`` and ``similarity_full``.

``relevance = 1 - (1 - meaning) * (1 - KEYWORD_WEIGHT * keywords)``: meaning ranks,
shared rare words raise an entry. An entry without an embedding of the configured model
(not embedded yet, or embedded by another model) is ranked by keywords alone until
``reembed_knowledge`` (or the next ingest or ``migrate``) embeds it: the request path
embeds only the question. Entries below ``GRACE_KNOWLEDGE_MIN_RELEVANCE`` are left out,
so a question the knowledge does not cover gets no hits.

The vectors, stems and titles of all entries are cached per process and database; a
cheap aggregate (count, last update, sum of ids), read with the full-text hits in one
statement, tells whether another process changed the entries, and the cache is rebuilt
then.
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

from chat.backends.base import KnowledgeHit
from chat.conf import chat_settings
from chat.embeddings import InvalidEmbeddingsBackend, embeddings_backend
from chat.embeddings.base import (
    EmbeddingsBackend,
    EmbeddingsError,
    Vectors,
    vector_unpack,
)
from chat.knowledge_sql import fingerprint_and_keywords, fingerprint_read
from chat.models import KnowledgeEntry
from chat.terms import query_terms, term_stem, text_stems

logger = logging.getLogger(__name__)

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


def _index(using: str, model_id: str, fingerprint: tuple[Any, ...] | None = None) -> _Index:
    """The cached index of ``using``'s entries (vectors of ``model_id``), rebuilt when the
    entries changed (``fingerprint``: read now unless given)."""
    if fingerprint is None:
        fingerprint = fingerprint_read(using)
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
    fingerprint, keyword_ids = fingerprint_and_keywords(terms, KEYWORD_CANDIDATES, using)
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
