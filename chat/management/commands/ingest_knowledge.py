"""``manage.py ingest_knowledge PATH... [--domain D]``: load .md/.txt files into the
knowledge base, idempotently (one source per file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.ingest import IngestReport, chunks_file, knowledge_files, knowledge_ingest
from chat.models import Domain


def source_name(path: Path) -> str:
    """The file's path relative to the project when inside it, else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path(settings.BASE_DIR).resolve()))
    except ValueError:
        return str(resolved)


class Command(BaseCommand):
    help = (
        "Load Markdown (.md) and text (.txt) files, or the files under directories, into "
        "the knowledge base. Markdown becomes one entry per heading. Safe to repeat: "
        "unchanged entries stay, changed ones are replaced, removed ones are deleted. New "
        "entries are embedded with GRACE_EMBEDDINGS for search by meaning."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument(
            "--domain", default="all", choices=[d.value for d in Domain],
            help="The domain of the entries (default: all).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        missing = [str(p) for p in options["paths"] if not p.exists()]
        if missing:
            raise CommandError(f"Not found: {', '.join(missing)}")
        files = knowledge_files(options["paths"])
        if not files:
            raise CommandError("No .md, .markdown or .txt files found.")
        totals = IngestReport()
        for path in files:
            try:
                chunks = chunks_file(path)
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"Cannot read {path}: {exc}") from None
            report = knowledge_ingest(
                source=source_name(path), chunks=chunks, domain=options["domain"]
            )
            totals.add(report)
            self.stdout.write(
                f"{path}: {report.added} added, {report.unchanged} unchanged, "
                f"{report.removed} removed"
            )
        self.stdout.write(
            f"{len(files)} file(s): {totals.added} added, {totals.unchanged} unchanged, "
            f"{totals.removed} removed; {totals.embedded} embedded."
        )
        if totals.not_embedded:
            self.stderr.write(
                f"{totals.not_embedded} entries could not be embedded ({totals.embed_error}); "
                "they are found by keywords only until `manage.py reembed_knowledge` succeeds."
            )
