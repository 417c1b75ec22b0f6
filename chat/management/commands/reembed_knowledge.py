"""``manage.py reembed_knowledge [--all] [--database D]``: give every knowledge entry an
embedding of the configured model (``GRACE_EMBEDDINGS``), e.g. after changing it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.conf import chat_settings
from chat.ingest import knowledge_embed, knowledge_stale
from chat.knowledge import knowledge_embedder
from chat.models import KnowledgeEntry


class Command(BaseCommand):
    help = (
        "Embed the knowledge entries that have no embedding of the configured model "
        "(GRACE_EMBEDDINGS), so that search finds them by meaning as well as by keywords. "
        "Safe to repeat; --all embeds every entry again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--all", action="store_true", help="Embed every entry again.")
        parser.add_argument("--database", default="default", help="Database alias.")

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        backend = knowledge_embedder()
        if backend is None:
            self.stdout.write(
                f"GRACE_EMBEDDINGS={chat_settings.EMBEDDINGS}: no embeddings backend, "
                "knowledge is searched by keywords only; nothing to embed."
            )
            return
        entries = (
            KnowledgeEntry.objects.using(using) if options["all"] else knowledge_stale(using=using)
        )
        report = knowledge_embed(entries=entries, using=using)
        if report.error:
            raise CommandError(
                f"Embedded {report.embedded} entries with {backend.model_id}, then failed "
                f"with {report.remaining} left: {report.error}"
            )
        total = KnowledgeEntry.objects.using(using).count()
        current = total - knowledge_stale(using=using).count()
        self.stdout.write(
            f"Embedded {report.embedded} entries with {backend.model_id}; {current} of {total} "
            "entries have a current embedding."
        )
