"""System checks for the chat settings (``manage.py check``, and at start-up)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from chat.backends import InvalidReplyBackend, reply_backend_get
from chat.conf import chat_settings, rate_check
from chat.pipeline import STAGES, stage_timeout


@register()
def check_chat_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    for name, rate in (
        ("GRACE_THROTTLE_USER", chat_settings.THROTTLE_USER),
        ("GRACE_THROTTLE_ANON", chat_settings.THROTTLE_ANON),
    ):
        try:
            rate_check(name, rate)
        except ImproperlyConfigured:
            problems.append(
                Error(
                    f"{name}={rate!r} is not a rate.",
                    hint="Use a rate like '30/min', '5/s', '1000/day', or 'off'.",
                    id="chat.E001",
                )
            )
    deadline = chat_settings.DEADLINE
    too_long = [stage.name for stage in STAGES if stage_timeout(stage) > deadline]
    if too_long:
        problems.append(
            Warning(
                f"Stage timeouts longer than the pipeline deadline ({deadline:g}s): "
                f"{', '.join(too_long)}; the deadline cuts them short.",
                id="chat.W002",
            )
        )
    stages = [stage.name for stage in STAGES]
    for name in sorted(set(chat_settings.STAGE_TIMEOUTS) - set(stages)):
        problems.append(
            Error(
                f"GRACE_TIMEOUT_{name.upper()} names no pipeline stage.",
                hint=f"The stages: {', '.join(stages)} (GRACE_TIMEOUT_RESPOND=25, ...).",
                id="chat.E003",
            )
        )
    return problems


@register()
def check_reply_backends(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The primary and the fallback reply backends load (``GRACE_REPLY_BACKEND``)."""
    problems: list[Any] = []
    for setting, alias in (
        ("GRACE_REPLY_BACKEND", chat_settings.REPLY_BACKEND),
        ("GRACE_REPLY_FALLBACK", chat_settings.REPLY_FALLBACK),
    ):
        try:
            reply_backend_get(alias)
        except InvalidReplyBackend as exc:
            problems.append(
                Error(
                    f"{setting}={alias!r}: {exc}",
                    hint="Name an alias of GRACE_CHAT['REPLY_BACKENDS'] (local, openai, fallback).",
                    id="chat.E002",
                )
            )
    return problems
