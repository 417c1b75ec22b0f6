"""``manage.py settings_reference``: the Markdown reference of every environment variable."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from grace.conf import settings_reference


class Command(BaseCommand):
    help = (
        "Print the settings reference (every environment variable: its key, type, default "
        "and meaning, grouped by app) as Markdown, generated from the specs the apps "
        "register. Write it with: manage.py settings_reference > docs/settings.md"
    )
    # The reference is what one reads to fix a bad value: print it even then.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(settings_reference(), ending="")
