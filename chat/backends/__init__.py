"""Reply backends, configured like Django's ``CACHES``.

``GRACE_CHAT["REPLY_BACKENDS"]`` maps aliases to ``{"BACKEND": dotted path, "OPTIONS":
{...}}``; ``GRACE_CHAT["REPLY_BACKEND"]`` names the primary alias and
``GRACE_CHAT["REPLY_FALLBACK"]`` the one that answers when the primary fails.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from chat.backends.base import ReplyBackend
from chat.conf import chat_settings
from grace.backends import BackendRegistry


class InvalidReplyBackend(ImproperlyConfigured):
    """A reply backend alias or class that cannot be loaded."""


_registry = BackendRegistry(
    kind="Reply backend",
    base=ReplyBackend,
    configs=lambda: chat_settings.REPLY_BACKENDS,
    error=InvalidReplyBackend,
)


def reply_backend_get(alias: str) -> ReplyBackend:
    """The backend instance for ``alias``, created once per process."""
    return _registry.get(alias)


def reply_backend_primary() -> ReplyBackend:
    return reply_backend_get(chat_settings.REPLY_BACKEND)


def reply_backend_fallback() -> ReplyBackend:
    return reply_backend_get(chat_settings.REPLY_FALLBACK)


@receiver(setting_changed, dispatch_uid="chat.backends.reset")
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "GRACE_CHAT":
        _registry.reset()
