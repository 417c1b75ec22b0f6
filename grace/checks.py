"""System checks for settings that are fine locally but unsafe in production."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_insecure_defaults(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    warnings = []
    if settings.SECRET_KEY == settings.INSECURE_SECRET_KEY:
        warnings.append(
            Warning(
                "GRACE_SECRET_KEY is not set: the built-in development key is in use.",
                hint="Set GRACE_SECRET_KEY to a long random value (python -c "
                "'import secrets; print(secrets.token_urlsafe(50))').",
                id="grace.W001",
            )
        )
    if settings.DEBUG:
        warnings.append(
            Warning(
                "GRACE_DEBUG is on.",
                hint="Unset GRACE_DEBUG (or set it to false) in production.",
                id="grace.W002",
            )
        )
    for alias, config in settings.DATABASES.items():
        if config["ENGINE"].endswith("sqlite3") and alias == "default":
            warnings.append(
                Warning(
                    "The default database is SQLite: one host only.",
                    hint="Set DATABASE_URL=postgres://... to run web and worker processes "
                    "on several hosts.",
                    id="grace.W003",
                )
            )
    if "*" in settings.ALLOWED_HOSTS:
        warnings.append(
            Warning(
                "GRACE_ALLOWED_HOSTS contains '*'.",
                hint="List the host names the service answers to.",
                id="grace.W004",
            )
        )
    return warnings


@register()
def check_settings_problems(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """``grace.E010``: an environment variable whose value could not be used (the settings
    module kept the default and collected the problem in ``GRACE_SETTINGS_PROBLEMS``)."""
    return [
        Error(problem, hint="Fix or unset the variable (docs/settings.md).", id="grace.E010")
        for problem in getattr(settings, "GRACE_SETTINGS_PROBLEMS", [])
    ]
