"""System checks of the embeddings backend and of the stored embeddings."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError

from chat.conf import chat_settings
from chat.embeddings import InvalidEmbeddingsBackend, embeddings_backend


@register()
def check_embeddings_backend(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``GRACE_EMBEDDINGS`` names a backend that loads (E010) and can embed (W011)."""
    alias = chat_settings.EMBEDDINGS
    try:
        backend = embeddings_backend()
    except InvalidEmbeddingsBackend as exc:
        return [
            Error(
                f"GRACE_EMBEDDINGS={alias!r}: {exc}",
                hint="Use wordllama, openai or none, or an alias of "
                "GRACE_CHAT['EMBEDDINGS_BACKENDS'].",
                id="chat.E010",
            )
        ]
    problem = backend.problem()
    if problem:
        return [
            Warning(
                f"GRACE_EMBEDDINGS={alias!r} cannot embed: {problem}; knowledge is searched "
                "by keywords only.",
                hint="Install it (pip install -e .) or set GRACE_EMBEDDINGS=none.",
                id="chat.W011",
            )
        ]
    return []


@register(Tags.database)
def check_knowledge_embeddings(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Any]:
    """Entries without an embedding of the configured model (``check --database default``
    and ``migrate``)."""
    from chat.models import KnowledgeEntry

    problems: list[Any] = []
    for alias in databases or []:
        try:
            model = embeddings_backend().model_id
            if not model:
                continue  # GRACE_EMBEDDINGS=none: nothing to embed
            stale = (
                KnowledgeEntry.objects.using(alias)
                .exclude(embedding_model=model, embedding__isnull=False)
                .count()
            )
        except (DatabaseError, InvalidEmbeddingsBackend):
            continue  # not migrated yet, another app's database, or E010 says it
        if stale:
            problems.append(
                Warning(
                    f"{stale} knowledge entries on database {alias!r} have no embedding of "
                    f"the configured model ({model}); until re-embedded "
                    "they are found by keywords only.",
                    hint="Run: python manage.py reembed_knowledge",
                    id="chat.W012",
                )
            )
    return problems
