"""Knowledge search's SQL (``chat.knowledge`` ranks what it reads): the entries'
fingerprint, which tells a process that its cached index is stale, and the full-text
hits, SQLite FTS5 (the ``chat_knowledge_fts`` table and its triggers, migration 0002) or
PostgreSQL full-text search (the stored ``search_vector``, migration 0011)."""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models import Q

from chat.models import KnowledgeEntry

FTS_TABLE = "chat_knowledge_fts"
FINGERPRINT = "COUNT(id), MAX(updated), SUM(id)"
"""What tells a process that the entries changed: their count, last update and sum of ids."""


def fingerprint_read(using: str) -> tuple[Any, ...]:
    """(count, last update, sum of ids) of the entries: one aggregate per search, in SQL
    written once (the ORM took 0.3 ms to build it, the database 0.01 ms to run it)."""
    connection = connections[using]
    table = connection.ops.quote_name(KnowledgeEntry._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {FINGERPRINT} FROM {table}")  # noqa: S608
        row = cursor.fetchone()
    return (row[0], row[1], row[2])


def fingerprint_and_keywords(
    terms: list[str], limit: int, using: str
) -> tuple[tuple[Any, ...] | None, list[int]]:
    """The entries' fingerprint and the ids full-text search finds for any of ``terms``
    (best first), in one statement on SQLite and PostgreSQL (the fingerprint's row, then
    the hits', ``UNION ALL``): one round trip per search instead of two. Elsewhere the
    fingerprint is None (``fingerprint_read`` reads it) and the search a statement of its own."""
    if not terms:
        return None, []
    connection = connections[using]
    vendor = connection.vendor
    if vendor == "sqlite":
        search, params = _search_sqlite(terms, limit)
    elif vendor == "postgresql":
        search, params = _search_postgresql(terms, limit, connection)
    else:
        return None, _search_plain(terms, limit, using)
    table = connection.ops.quote_name(KnowledgeEntry._meta.db_table)
    sql = (
        f"SELECT 0, {FINGERPRINT} FROM {table} "  # noqa: S608
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
