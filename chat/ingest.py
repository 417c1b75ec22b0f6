"""Knowledge in: embedding entries with the configured model, and ingesting .md/.txt
files. Ingestion splits Markdown at its headings (a chunk per section, titled with the
heading path) and text files at blank-line blocks; it is idempotent per source: unchanged
chunks stay, new ones are added, chunks no longer in the file are removed; then the
source's entries without a current embedding are embedded. Searching them:
``chat.knowledge``."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import DatabaseError, router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from chat.embeddings.base import (
    EmbeddingsError,
    vector_pack,
)
from chat.knowledge import (
    STARTER_DIR,
    STARTER_PREFIX,
    TEXT_CHUNK_CHARS,
    entry_text,
    knowledge_embedder,
)
from chat.models import KnowledgeEntry

logger = logging.getLogger(__name__)

EMBED_BATCH = 64


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
