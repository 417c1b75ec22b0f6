"""Hybrid knowledge search: embeddings computed at ingest and stored with each entry, a
model change that marks entries stale until ``reembed_knowledge``, paraphrases found by
meaning that keyword search misses (a real WordLlama, no mocks), the ``none`` backend,
and the ``openai`` backend against a real local ``/v1/embeddings`` server. Both engines:
the suite runs these on SQLite and again on PostgreSQL."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command

from chat.embeddings import embeddings_backend
from chat.embeddings.base import vector_unpack
from chat.ingest import chunks_file, knowledge_ingest, knowledge_stale
from chat.knowledge import knowledge_cache_clear, knowledge_search
from chat.models import KnowledgeEntry
from tests.chat.embeddings_server import EmbeddingsServer

HANDBOOK = Path(__file__).resolve().parents[2] / "bench" / "corpus" / "handbook"
WORDLLAMA = "wordllama:l2_supercat_256"


@pytest.fixture(autouse=True)
def fresh_cache():
    knowledge_cache_clear()
    yield
    knowledge_cache_clear()


@pytest.fixture
def embeddings(settings):
    """``embeddings("openai", EMBEDDINGS_URL=...)``: the embeddings backend in use."""

    def use(alias: str, **values: object) -> None:
        settings.GRACE_CHAT = {**settings.GRACE_CHAT, "EMBEDDINGS": alias, **values}

    return use


def handbook() -> None:
    for path in sorted(HANDBOOK.glob("*.md")):
        knowledge_ingest(source=f"handbook/{path.name}", chunks=chunks_file(path))


def titles(text: str) -> list[str]:
    return [hit.title for hit in knowledge_search(text=text, limit=3)]


def warnings_w012() -> list[str]:
    return [m.msg for m in run_checks(databases=["default"]) if m.id == "chat.W012"]


@pytest.mark.django_db
def test_ingest_stores_a_unit_vector_and_its_model_with_each_entry():
    handbook()
    entries = KnowledgeEntry.objects.filter(source__startswith="handbook/")
    assert entries.count() == 28
    assert set(entries.values_list("embedding_model", flat=True)) == {WORDLLAMA}
    stored = entries.values_list("embedding", flat=True).first()
    assert stored is not None
    vector = vector_unpack(stored)
    assert vector.shape == (256,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4


@pytest.mark.django_db
def test_hybrid_search_finds_paraphrases_that_keyword_search_misses(embeddings):
    handbook()
    refunds = "Returns and money › Refunds"
    question = "When do I get my money back after sending something back?"
    embeddings("none")
    assert refunds not in titles(question)  # no word of the question is in the entry
    embeddings("wordllama")
    hits = knowledge_search(text=question, limit=3)
    assert hits[0].title == refunds
    assert hits[0].source == "handbook/returns.md" and hits[0].id == hits[0].entry_id
    assert 0.2 <= hits[0].score <= 1.0
    assert "Stores and contact › Holiday hours" in titles("Is the shop open on Christmas Day?")
    # Exact words still count: Grace's own identifiers are found as before.
    assert titles("run_executor worker")[0].startswith(("The executor", "Commands"))


@pytest.mark.django_db
def test_unrelated_questions_get_no_hits():
    handbook()
    for question in ("What is 2+2?", "Tell me a joke.", "What is the capital of France?"):
        assert knowledge_search(text=question) == [], question


@pytest.mark.django_db
def test_a_model_change_marks_entries_stale_until_reembed_knowledge(embeddings):
    handbook()
    total = KnowledgeEntry.objects.count()
    assert warnings_w012() == []
    with EmbeddingsServer() as server:
        embeddings("openai", EMBEDDINGS_URL=server.url, EMBEDDINGS_MODEL="fake-embed")
        assert knowledge_stale().count() == total
        assert warnings_w012() == [
            f"{total} knowledge entries on database 'default' have no embedding of the "
            "configured model (openai:fake-embed); until re-embedded they are found by "
            "keywords only."
        ]
        # Search never embeds entries: the stale ones are found by keywords meanwhile.
        assert titles("gift cards")[0] == "Returns and money › Gift cards"
        assert len(server.requests) == 0  # no vector of this model yet: not even the question
        assert knowledge_stale().count() == total

        out = StringIO()
        call_command("reembed_knowledge", stdout=out)
        assert out.getvalue().strip() == (
            f"Embedded {total} entries with openai:fake-embed; {total} of {total} entries "
            "have a current embedding."
        )
        assert warnings_w012() == []
        assert set(KnowledgeEntry.objects.values_list("embedding_model", flat=True)) == {
            "openai:fake-embed"
        }
        before = len(server.requests)
        assert titles("When do I get my money back after sending something back?")[0] == (
            "Returns and money › Refunds"
        )
        assert len(server.requests) == before + 1  # the question, embedded once

        out = StringIO()
        call_command("reembed_knowledge", stdout=out)
        assert out.getvalue().startswith("Embedded 0 entries with openai:fake-embed;")


@pytest.mark.django_db
def test_the_openai_backend_sends_model_key_and_batches(embeddings):
    with EmbeddingsServer(api_key="sk-test-embed") as server:
        embeddings(
            "openai",
            EMBEDDINGS_URL=server.url,
            EMBEDDINGS_MODEL="fake-embed",
            EMBEDDINGS_API_KEY="sk-test-embed",
        )
        report = knowledge_ingest(
            source="handbook/stores.md", chunks=chunks_file(HANDBOOK / "stores.md")
        )
        assert (report.added, report.embedded, report.not_embedded) == (5, 5, 0)
        sent = server.requests[0]
        assert sent["path"] == "/v1/embeddings"
        assert sent["headers"]["Authorization"] == "Bearer sk-test-embed"
        assert sent["json"]["model"] == "fake-embed" and len(sent["json"]["input"]) == 5
        assert sent["json"]["input"][0].startswith("Stores and contact: ")
        assert titles("What time do you shut on weekdays?")[0] in (
            "Stores and contact › Opening hours",
            "Stores and contact › Holiday hours",
        )

        # The server fails: ingest stores the entries and says so; search uses keywords.
        server.fail = True
        out, err = StringIO(), StringIO()
        call_command("ingest_knowledge", str(HANDBOOK / "returns.md"), stdout=out, stderr=err)
        assert "6 added, 0 unchanged, 0 removed; 0 embedded." in out.getvalue()
        assert "6 entries could not be embedded" in err.getvalue()
        assert "answered 503" in err.getvalue()
        assert titles("gift cards voucher")[0] == "Returns and money › Gift cards"
        stale = knowledge_stale().count()  # these 6 and the starter knowledge
        assert stale == 6 + KnowledgeEntry.objects.filter(source__startswith="starter:").count()
        with pytest.raises(CommandError, match=f"failed with {stale} left: .* answered 503"):
            call_command("reembed_knowledge")
        server.fail = False
        call_command("reembed_knowledge", stdout=StringIO())
        assert knowledge_stale().count() == 0


@pytest.mark.django_db
def test_a_server_that_is_down_leaves_keyword_search(embeddings):
    with EmbeddingsServer() as server:
        embeddings("openai", EMBEDDINGS_URL=server.url, EMBEDDINGS_MODEL="fake-embed")
        handbook()
    # The server is gone: the question cannot be embedded; keyword hits still come, and
    # a paraphrase that only meaning finds is not found meanwhile.
    assert titles("gift cards")[0] == "Returns and money › Gift cards"
    paraphrase = "When do I get my money back after sending something back?"
    assert "Returns and money › Refunds" not in titles(paraphrase)


@pytest.mark.django_db
def test_the_none_backend_searches_by_keyword_and_embeds_nothing(embeddings):
    embeddings("none")
    report = knowledge_ingest(source="r.md", chunks=chunks_file(HANDBOOK / "returns.md"))
    assert (report.added, report.embedded) == (6, 0)
    assert set(
        KnowledgeEntry.objects.filter(source="r.md").values_list("embedding_model", flat=True)
    ) == {""}
    assert titles("gift card cash")[0] == "Returns and money › Gift cards"
    assert titles("What is 2+2?") == []
    assert warnings_w012() == []
    out = StringIO()
    call_command("reembed_knowledge", stdout=out)
    assert "GRACE_EMBEDDINGS=none: no embeddings backend" in out.getvalue()


@pytest.mark.django_db
def test_migrate_embeds_entries_that_have_no_current_embedding():
    KnowledgeEntry.objects.update(embedding=None, embedding_model="")
    assert knowledge_stale().count() > 0
    call_command("migrate", verbosity=0)  # post_migrate embeds what migrations added
    assert knowledge_stale().count() == 0
    starter = KnowledgeEntry.objects.filter(source__startswith="starter:")
    assert starter.exists()
    assert set(starter.values_list("embedding_model", flat=True)) == {WORDLLAMA}


def test_system_checks_name_an_unknown_backend_and_missing_weights(embeddings, settings):
    embeddings("bogus")
    errors = [m for m in run_checks() if m.id == "chat.E010"]
    assert len(errors) == 1 and "'bogus' is not configured" in errors[0].msg
    settings.GRACE_CHAT = {
        **settings.GRACE_CHAT,
        "EMBEDDINGS": "tiny",
        "EMBEDDINGS_BACKENDS": {
            "tiny": {
                "BACKEND": "chat.embeddings.wordllama.WordLlamaBackend",
                "OPTIONS": {"CONFIG": "l2_supercat", "DIM": 64},
            }
        },
    }
    warnings = [m for m in run_checks() if m.id == "chat.W011"]
    assert len(warnings) == 1
    assert "no weights l2_supercat_64.safetensors" in warnings[0].msg
    assert embeddings_backend().model_id == "wordllama:l2_supercat_64"


@pytest.mark.django_db
def test_an_edited_entry_loses_its_old_vector_and_the_admin_embeds_it_again(admin_client):
    from django.urls import reverse

    entry = KnowledgeEntry.objects.create(title="Kettles", body="Our kettles boil in 90 s.")
    assert knowledge_stale().filter(pk=entry.pk).exists()  # created outside ingest
    response = admin_client.post(
        reverse("admin:chat_knowledgeentry_changelist"),
        {"action": "reembed", "_selected_action": [entry.pk]},
    )
    assert response.status_code == 302
    entry.refresh_from_db()
    assert entry.embedding_model == WORDLLAMA

    entry.body = "Our kettles boil in 60 s."
    entry.save()
    entry.refresh_from_db()
    assert (entry.embedding, entry.embedding_model) == (None, "")  # the old text's vector

    response = admin_client.post(
        reverse("admin:chat_knowledgeentry_change", args=[entry.pk]),
        {"title": "Kettles", "body": "Our kettles boil in 45 s.", "domain": "all", "source": ""},
    )
    assert response.status_code == 302, response.content[:500]
    entry.refresh_from_db()
    assert entry.body.endswith("45 s.") and entry.embedding_model == WORDLLAMA
    assert titles("How long do your kettles take to boil?")[0] == "Kettles"
