"""Reply backends, configured like Django's ``CACHES``.

``GRACE_CHAT["REPLY_BACKENDS"]`` maps aliases to ``{"BACKEND": dotted path, "OPTIONS":
{...}}``; ``GRACE_CHAT["REPLY_BACKEND"]`` names the primary alias and
``GRACE_CHAT["REPLY_FALLBACK"]`` the one that answers when the primary fails.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from chat.backends.base import ReplyBackend
from chat.conf import chat_settings


class InvalidReplyBackend(ImproperlyConfigured):
    """A reply backend alias or class that cannot be loaded."""


_instances: dict[str, ReplyBackend] = {}
_instances_lock = threading.Lock()


def reply_backend_get(alias: str) -> ReplyBackend:
    """The backend instance for ``alias``, created once per process."""
    instance = _instances.get(alias)
    if instance is not None:
        return instance
    with _instances_lock:
        if alias not in _instances:
            _instances[alias] = _backend_make(alias)
        return _instances[alias]


def _backend_make(alias: str) -> ReplyBackend:
    configs: dict[str, Any] = chat_settings.REPLY_BACKENDS
    if alias not in configs:
        raise InvalidReplyBackend(
            f"Reply backend {alias!r} is not configured; known: {', '.join(sorted(configs))}."
        )
    config = configs[alias]
    try:
        backend_class = import_string(config["BACKEND"])
    except (ImportError, KeyError) as exc:
        raise InvalidReplyBackend(
            f"Reply backend {alias!r} could not be loaded ({config.get('BACKEND')!r}): {exc}"
        ) from exc
    if not (isinstance(backend_class, type) and issubclass(backend_class, ReplyBackend)):
        raise InvalidReplyBackend(f"{config['BACKEND']!r} is not a ReplyBackend subclass.")
    instance: ReplyBackend = backend_class(alias, dict(config.get("OPTIONS", {})))
    return instance


def reply_backend_primary() -> ReplyBackend:
    return reply_backend_get(chat_settings.REPLY_BACKEND)


def reply_backend_fallback() -> ReplyBackend:
    return reply_backend_get(chat_settings.REPLY_FALLBACK)


@receiver(setting_changed, dispatch_uid="chat.backends.reset")
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "GRACE_CHAT":
        _instances.clear()
