"""``manage.py create_api_token USER [--name NAME] [--create-user]``: print a new API token once.

Only the token goes to stdout, so a shell can capture it::

    TOKEN=$(.venv/bin/python manage.py create_api_token alice --create-user)

Everything else (what was created, how to send the token) goes to stderr.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from grace.auth import api_token_create


class Command(BaseCommand):
    help = (
        "Create an API token for USER and print it. It is shown only now (only its hash "
        "is stored); revoke it in the admin."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="The username of an active user.")
        parser.add_argument("--name", default="", help="A label to tell tokens apart.")
        parser.add_argument(
            "--create-user",
            action="store_true",
            help="Create USER first if it does not exist (with no usable password: it "
            "signs in with its token only; set a password later with changepassword).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["user"]
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(username)
        except model.DoesNotExist:
            if not options["create_user"]:
                raise CommandError(
                    f"No user named {username!r}. Create it with the admin or "
                    "createsuperuser, or pass --create-user to create it now."
                ) from None
            # No password: create_user() stores an unusable one.
            user = model._default_manager.create_user(**{model.USERNAME_FIELD: username})
            self.stderr.write(f"User {username!r} created (no password).")
        if not user.is_active:
            raise CommandError(f"User {username!r} is not active.")
        token, raw = api_token_create(user=user, name=options["name"][:100])
        self.stdout.write(raw)
        self.stderr.write(
            f"Token {token.prefix}… created for {user}. Send it as "
            "'Authorization: Bearer <token>'; it is not shown again."
        )
