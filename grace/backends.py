"""Backends behind a settings dict, the way Django's ``CACHES`` works: aliases map to
``{"BACKEND": dotted path, "OPTIONS": {...}}``; each alias is instantiated once per process
as ``BACKEND(alias, OPTIONS)``; an alias or class that cannot load raises the registry's
``ImproperlyConfigured`` subclass. The apps' reply and embeddings backends use it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

B = TypeVar("B")


class BackendRegistry(Generic[B]):
    """One instance per alias of ``configs()``, each a ``base``; ``kind`` names them in
    errors ("Reply backend"); ``error`` is raised for an alias or class that cannot load."""

    def __init__(
        self,
        *,
        kind: str,
        base: type[B],
        configs: Callable[[], dict[str, Any]],
        error: type[ImproperlyConfigured],
    ) -> None:
        self.kind = kind
        self.base = base
        self.configs = configs
        self.error = error
        self._instances: dict[str, B] = {}
        self._lock = threading.Lock()

    def get(self, alias: str) -> B:
        """The instance for ``alias``, created once per process."""
        instance = self._instances.get(alias)
        if instance is not None:
            return instance
        with self._lock:
            if alias not in self._instances:
                self._instances[alias] = self.make(alias)
            return self._instances[alias]

    def make(self, alias: str) -> B:
        """A new instance for ``alias``."""
        configs = self.configs()
        if alias not in configs:
            raise self.error(
                f"{self.kind} {alias!r} is not configured; known: {', '.join(sorted(configs))}."
            )
        config = configs[alias]
        try:
            backend_class = import_string(config["BACKEND"])
        except (ImportError, KeyError) as exc:
            raise self.error(
                f"{self.kind} {alias!r} could not be loaded ({config.get('BACKEND')!r}): {exc}"
            ) from exc
        if not (isinstance(backend_class, type) and issubclass(backend_class, self.base)):
            raise self.error(f"{config['BACKEND']!r} is not a {self.base.__name__} subclass.")
        factory: Callable[[str, dict[str, Any]], B] = backend_class
        return factory(alias, dict(config.get("OPTIONS", {})))

    def reset(self) -> list[B]:
        """Forget every instance (settings changed); returns them, for closing."""
        with self._lock:
            instances = list(self._instances.values())
            self._instances.clear()
        return instances
