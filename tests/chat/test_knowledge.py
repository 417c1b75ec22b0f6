"""Knowledge: chunking, idempotent ingestion, keyword search on SQLite (FTS5/bm25) and on
PostgreSQL (a real server on a scratch database), and the ingest_knowledge command.
Search by meaning (embeddings) is in test_knowledge_hybrid.py; the keyword tests here
run with ``GRACE_EMBEDDINGS=none``."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.core.management import CommandError, call_command

from chat.ingest import Chunk, chunks_markdown, chunks_text, knowledge_ingest
from chat.knowledge import knowledge_search
from chat.models import KnowledgeEntry
from chat.terms import query_terms
from tests.servers import scratch_postgres_database


@pytest.fixture
def keyword_only(settings):
    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "EMBEDDINGS": "none"}

DOC = """# Gardening

Intro line.

## Tomatoes

Tomatoes need sun and water every morning.

```python
# not a heading
```

### Pests

Aphids love tomatoes; use soap spray.

## Roses

Prune roses in late winter.
"""


def test_markdown_is_chunked_by_heading_path():
    chunks = chunks_markdown(DOC, default_title="garden")
    assert [c.title for c in chunks] == [
        "Gardening", "Gardening › Tomatoes", "Gardening › Tomatoes › Pests", "Gardening › Roses",
    ]
    assert "# not a heading" in chunks[1].body
    assert chunks[2].body == "Aphids love tomatoes; use soap spray."


def test_text_is_chunked_by_blocks():
    text = "\n\n".join(f"Paragraph {i} " + "word " * 100 for i in range(10))
    chunks = chunks_text(text, default_title="Notes")
    assert len(chunks) > 1 and all(len(c.body) <= 2100 for c in chunks)
    assert chunks[0].title == "Notes (1)"


def test_query_terms_drop_stopwords_and_markers():
    assert query_terms("How do I run the Executor? [REDACTED:secret]") == ["run", "executor"]


@pytest.mark.django_db
def test_ingest_is_idempotent_and_follows_the_source():
    first = knowledge_ingest(source="garden.md", chunks=chunks_markdown(DOC, default_title="g"))
    assert (first.added, first.unchanged, first.removed) == (4, 0, 0)
    again = knowledge_ingest(source="garden.md", chunks=chunks_markdown(DOC, default_title="g"))
    assert (again.added, again.unchanged, again.removed) == (0, 4, 0)
    edited = DOC.replace("Prune roses in late winter.", "Prune roses in early spring.")
    edited = edited.replace("## Tomatoes", "## Tomatoes!")
    chunks = chunks_markdown(edited, default_title="g")
    changed = knowledge_ingest(source="garden.md", chunks=chunks)
    assert changed.removed == 3 and changed.added == 3
    assert KnowledgeEntry.objects.filter(source="garden.md").count() == 4
    assert not KnowledgeEntry.objects.filter(body__contains="late winter").exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("keyword_only")
def test_keyword_search_is_ranked_and_follows_edits():
    knowledge_ingest(source="garden.md", chunks=chunks_markdown(DOC, default_title="g"))
    knowledge_ingest(source="x.md", chunks=[Chunk("Tomato soup", "A soup made of tomatoes.")])
    hits = knowledge_search(text="aphids on my tomatoes?", limit=3)
    assert hits[0].title == "Gardening › Tomatoes › Pests"
    assert hits[0].score > hits[-1].score
    assert knowledge_search(text="pruning roses")[0].title == "Gardening › Roses"  # porter stems
    entry = KnowledgeEntry.objects.get(title="Gardening › Roses")
    entry.body = "Roses are pruned with sharp secateurs."
    entry.save()
    assert knowledge_search(text="secateurs")[0].title == "Gardening › Roses"
    entry.delete()
    assert knowledge_search(text="secateurs") == []
    assert knowledge_search(text="the and of") == []


@pytest.mark.django_db
@pytest.mark.usefixtures("keyword_only")
def test_search_prefers_the_requested_domain():
    knowledge_ingest(source="a", chunks=[Chunk("Models", "Neural models learn weights.")])
    knowledge_ingest(
        source="b", chunks=[Chunk("Models", "Neural models in production.")], domain="ml"
    )
    assert knowledge_search(text="neural models", domain="ml")[0].body.endswith("production.")


@pytest.mark.django_db
def test_starter_knowledge_is_loaded_by_migrations():
    from chat.ingest import knowledge_seed

    knowledge_seed()  # a transactional test may have flushed the table; idempotent
    sources = set(KnowledgeEntry.objects.values_list("source", flat=True))
    assert {"starter:commands.md", "starter:executor.md", "starter:settings.md"} <= sources
    assert knowledge_search(text="run_executor worker")[0].title.startswith(
        ("The executor", "Commands")
    )


@pytest.mark.django_db
def test_ingest_knowledge_command(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "garden.md").write_text(DOC)
    (tmp_path / "sub" / "notes.txt").write_text("Bees like lavender.\n\nAnd thyme.")
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    out = StringIO()
    call_command("ingest_knowledge", str(tmp_path), "--domain", "knowledge", stdout=out)
    assert "2 file(s): 5 added, 0 unchanged, 0 removed; 5 embedded." in out.getvalue()
    assert KnowledgeEntry.objects.filter(domain="knowledge").count() == 5
    out = StringIO()
    call_command("ingest_knowledge", str(tmp_path), stdout=out)
    assert "0 added, 5 unchanged, 0 removed" in out.getvalue()
    with pytest.raises(CommandError, match="Not found"):
        call_command("ingest_knowledge", str(tmp_path / "missing.md"))


@pytest.mark.slow
def test_postgresql_full_text_search_end_to_end(postgres_url, grace_server):
    with scratch_postgres_database(postgres_url, "grace_chat") as url:
        env = {"DATABASE_URL": url, "GRACE_ALLOW_ANONYMOUS": "true"}
        with grace_server(env) as server:
            body = httpx.post(
                f"{server.url}/api/chat/",
                json={"message": "How do I run the executor worker?"},
                timeout=20,
            ).json()
            assert body["degraded"] is False, body
            assert "run_executor" in body["response"]
            assert "**The executor" in body["response"] or "**Commands" in body["response"]


@pytest.mark.django_db
def test_postgresql_keyword_search_says_what_the_orm_says():
    """The search's SQL, written once, ranks as Django's SearchVector/SearchQuery/SearchRank
    do (on PostgreSQL; SQLite searches with FTS5)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL full-text search")
    from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

    from chat.knowledge_sql import fingerprint_and_keywords

    assert KnowledgeEntry.objects.count() > 10  # the starter knowledge (migrations)
    for text in ["How do I run the executor worker?", "api token create", "capital of Mongolia",
                 "what settings are there", "retention of audit entries"]:
        terms = query_terms(text)
        query = SearchQuery(terms[0], config="english")
        for term in terms[1:]:
            query |= SearchQuery(term, config="english")
        vector = SearchVector("title", weight="A", config="english") + SearchVector(
            "body", weight="B", config="english"
        )
        orm = list(
            KnowledgeEntry.objects.annotate(rank=SearchRank(vector, query))
            .filter(rank__gt=0).order_by("-rank", "id").values_list("id", flat=True)[:50]
        )
        assert fingerprint_and_keywords(terms, 50, "default")[1] == orm, text


@pytest.mark.django_db
def test_postgresql_keyword_search_reads_the_indexed_vector():
    """The search reads the stored ``search_vector`` through its GIN index (migration
    0011), not a vector computed for every entry; an entry's vector follows its edits
    (``test_keyword_search_is_ranked_and_follows_edits`` searches after them)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL full-text search")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM chat_knowledgeentry "
            "WHERE search_vector @@ plainto_tsquery('english'::regconfig, %s)", ["executor"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SELECT search_vector::text FROM chat_knowledgeentry "
                       "WHERE title LIKE %s LIMIT 1", ["%executor%"])
        vector = cursor.fetchone()[0]
    assert "chat_knowledge_search" in plan, plan
    assert "'executor':" in vector and "A" in vector, vector
