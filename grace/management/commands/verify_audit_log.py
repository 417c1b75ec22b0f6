"""``manage.py verify_audit_log``: walk the audit chain; exit 1 naming the first bad entry."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from grace.audit import audit_verify


class Command(BaseCommand):
    help = (
        "Check every audit entry: sequence without gaps, each previous_hash equal to the "
        "hash of the entry before, each entry_hash equal to the hash of its fields. Exits "
        "non-zero naming the first entry that breaks the chain."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database", default="default", help="The database alias (default: default)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify(using=options["database"])
        if report.problem is not None:
            raise CommandError(
                f"{report.problem} (the {report.checked} entries before it are intact)"
            )
        self.stdout.write(
            f"Audit log intact: {report.checked} entries; head sequence "
            f"{report.head_sequence}, hash {report.head_hash}."
        )
