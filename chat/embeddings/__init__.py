"""Embeddings backends, configured like the reply backends (and Django's ``CACHES``).

``GRACE_CHAT["EMBEDDINGS"]`` (``GRACE_EMBEDDINGS``) names the alias in use. The built-in
aliases are ``wordllama`` (offline, the default), ``openai`` (an OpenAI-compatible
``/v1/embeddings`` server, options from ``GRACE_EMBEDDINGS_*``) and ``none`` (keyword
search only); ``GRACE_CHAT["EMBEDDINGS_BACKENDS"]`` adds or replaces aliases with
``{"BACKEND": dotted path, "OPTIONS": {...}}``.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from chat.conf import chat_settings
from chat.embeddings.base import EmbeddingsBackend


class InvalidEmbeddingsBackend(ImproperlyConfigured):
    """An embeddings backend alias or class that cannot be loaded."""


def embeddings_backends() -> dict[str, dict[str, Any]]:
    """Every configured alias: the built-in ones, then ``EMBEDDINGS_BACKENDS``."""
    return {
        "wordllama": {"BACKEND": "chat.embeddings.wordllama.WordLlamaBackend", "OPTIONS": {}},
        "openai": {
            "BACKEND": "chat.embeddings.openai.OpenAIEmbeddingsBackend",
            "OPTIONS": {
                "URL": chat_settings.EMBEDDINGS_URL,
                "MODEL": chat_settings.EMBEDDINGS_MODEL,
                "API_KEY": chat_settings.EMBEDDINGS_API_KEY,
                "TIMEOUT": chat_settings.EMBEDDINGS_TIMEOUT,
            },
        },
        "none": {"BACKEND": "chat.embeddings.base.NoEmbeddings", "OPTIONS": {}},
        **chat_settings.EMBEDDINGS_BACKENDS,
    }


_instances: dict[str, EmbeddingsBackend] = {}
_instances_lock = threading.Lock()


def embeddings_backend_get(alias: str) -> EmbeddingsBackend:
    """The backend instance for ``alias``, created once per process."""
    instance = _instances.get(alias)
    if instance is not None:
        return instance
    with _instances_lock:
        if alias not in _instances:
            _instances[alias] = _backend_make(alias)
        return _instances[alias]


def embeddings_backend() -> EmbeddingsBackend:
    """The backend ``GRACE_EMBEDDINGS`` names."""
    return embeddings_backend_get(chat_settings.EMBEDDINGS)


def _backend_make(alias: str) -> EmbeddingsBackend:
    configs = embeddings_backends()
    if alias not in configs:
        raise InvalidEmbeddingsBackend(
            f"Embeddings backend {alias!r} is not configured; known: {', '.join(sorted(configs))}."
        )
    config = configs[alias]
    try:
        backend_class = import_string(config["BACKEND"])
    except (ImportError, KeyError) as exc:
        raise InvalidEmbeddingsBackend(
            f"Embeddings backend {alias!r} could not be loaded ({config.get('BACKEND')!r}): {exc}"
        ) from exc
    if not (isinstance(backend_class, type) and issubclass(backend_class, EmbeddingsBackend)):
        raise InvalidEmbeddingsBackend(f"{config['BACKEND']!r} is not an EmbeddingsBackend.")
    instance: EmbeddingsBackend = backend_class(alias, dict(config.get("OPTIONS", {})))
    return instance


@receiver(setting_changed, dispatch_uid="chat.embeddings.reset")
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "GRACE_CHAT":
        with _instances_lock:
            for instance in _instances.values():
                instance.close()
            _instances.clear()
