"""``manage.py create_api_token USER [--name NAME]``: print a new API token once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.auth import api_token_create


class Command(BaseCommand):
    help = (
        "Create an API token for USER and print it. It is shown only now (only its hash "
        "is stored); revoke it in the admin."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="The username of an existing, active user.")
        parser.add_argument("--name", default="", help="A label to tell tokens apart.")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(options["user"])
        except model.DoesNotExist:
            raise CommandError(f"No user named {options['user']!r}.") from None
        if not user.is_active:
            raise CommandError(f"User {options['user']!r} is not active.")
        token, raw = api_token_create(user=user, name=options["name"][:100])
        self.stdout.write(raw)
        self.stderr.write(
            f"Token {token.prefix}… created for {user}. Send it as "
            "'Authorization: Bearer <token>'; it is not shown again."
        )
