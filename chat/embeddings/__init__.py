"""Embeddings backends, configured like the reply backends (and Django's ``CACHES``).

``GRACE_CHAT["EMBEDDINGS"]`` (``GRACE_EMBEDDINGS``) names the alias in use. The built-in
aliases are ``wordllama`` (offline, the default), ``openai`` (an OpenAI-compatible
``/v1/embeddings`` server, options from ``GRACE_EMBEDDINGS_*``) and ``none`` (keyword
search only); ``GRACE_CHAT["EMBEDDINGS_BACKENDS"]`` adds or replaces aliases with
``{"BACKEND": dotted path, "OPTIONS": {...}}``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from chat.conf import chat_settings
from chat.embeddings.base import EmbeddingsBackend
from grace.backends import BackendRegistry


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


_registry = BackendRegistry(
    kind="Embeddings backend",
    base=EmbeddingsBackend,
    configs=embeddings_backends,
    error=InvalidEmbeddingsBackend,
)


def embeddings_backend_get(alias: str) -> EmbeddingsBackend:
    """The backend instance for ``alias``, created once per process."""
    return _registry.get(alias)


def embeddings_backend() -> EmbeddingsBackend:
    """The backend ``GRACE_EMBEDDINGS`` names."""
    return embeddings_backend_get(chat_settings.EMBEDDINGS)


@receiver(setting_changed, dispatch_uid="chat.embeddings.reset")
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "GRACE_CHAT":
        for instance in _registry.reset():
            instance.close()
