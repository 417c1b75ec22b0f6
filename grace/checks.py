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


@register(Tags.security, deploy=True)
def check_audit_anchoring(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """``grace.W030``-``W032``: an audit chain anyone could re-hash, or not anchored
    outside the database."""
    from grace.audit_checkpoints import checkpoint_path
    from grace.ops_conf import ops_settings

    warnings = []
    key = ops_settings.AUDIT_KEY or ""
    if not key and settings.SECRET_KEY == settings.INSECURE_SECRET_KEY:
        warnings.append(
            Warning(
                "The audit chain's key is derived from the development secret key: anyone "
                "can re-hash a changed audit log so that it verifies.",
                hint="Set GRACE_AUDIT_KEY (or GRACE_SECRET_KEY) to a long random value, kept "
                "off the database host.",
                id="grace.W030",
            )
        )
    elif key and len(key) < 32:
        warnings.append(
            Warning(
                f"GRACE_AUDIT_KEY is {len(key)} characters long: it could be guessed.",
                hint="Use at least 32 random characters (python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))').",
                id="grace.W032",
            )
        )
    if checkpoint_path() is None:
        warnings.append(
            Warning(
                "The audit chain is not checkpointed to a file: deleting its newest entries, "
                "or re-hashing it with the key, would still verify (only the JSON log lines "
                "record its head).",
                hint="Set GRACE_AUDIT_CHECKPOINT_PATH to a file outside the database server, "
                "e.g. /var/lib/grace/audit-checkpoints.jsonl.",
                id="grace.W031",
            )
        )
    return warnings
