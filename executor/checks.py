"""System checks: invalid executor OPTIONS are refused at start-up (``executor.E001``..).

``migrate`` and ``run_executor`` run them, so a bad deployment stops before serving.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.utils.module_loading import import_string

from executor.backend import ExecutorBackend
from executor.conf import options_problems

CHECK_HINT = "See docs/executor.md (Settings) for each option and its valid values."


def executor_aliases() -> dict[str, dict[str, Any]]:
    """The ``TASKS`` entries whose backend is (a subclass of) ``ExecutorBackend``."""
    found = {}
    for alias, params in getattr(settings, "TASKS", {}).items():
        try:
            backend = import_string(params.get("BACKEND", ""))
        except ImportError:
            continue
        if isinstance(backend, type) and issubclass(backend, ExecutorBackend):
            found[alias] = params
    return found


@register()
def check_executor_options(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    aliases = executor_aliases()
    for alias, params in aliases.items():
        for check_id, message in options_problems(alias, {"QUEUES": ["default"], **params}):
            messages.append(Error(message, hint=CHECK_HINT, id=check_id))
    if not aliases:
        messages.append(
            Warning(
                "No TASKS backend is executor.backend.ExecutorBackend: run_executor has no "
                "queue to run.",
                hint="Unset GRACE_TASKS_BACKEND to use the executor.",
                id="executor.W001",
            )
        )
    return messages
