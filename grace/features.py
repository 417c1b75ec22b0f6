"""Feature switches and optional dependencies.

``GRACE_DISABLED_FEATURES=learning,audit`` switches optional parts off. Each part that
can be switched off registers its feature (``feature_register``) from its app's
``AppConfig.ready()``: the core registers ``audit``, ``events`` and ``metrics``; the chat
app its optional stages. A name nobody registered is reported by ``grace.E022``.

An optional package that is missing or fails to import switches off only what needs it,
with one log line per process and a system check warning (``grace.W010``): nothing
crashes at import. Apps add the packages their settings rely on with
``dependency_source_register``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.checks import Error, Info, Warning
from django.core.exceptions import ImproperlyConfigured

from grace.ops_conf import ops_settings

logger = logging.getLogger(__name__)

_features: dict[str, str] = {}
_dependency_sources: list[Callable[[], list[Dependency]]] = []


class InvalidFeatures(ImproperlyConfigured):
    """``GRACE_DISABLED_FEATURES`` names a feature that does not exist."""


def feature_register(name: str, description: str) -> None:
    """Declare a feature that ``GRACE_DISABLED_FEATURES`` may switch off (idempotent)."""
    _features[name] = description


def features() -> dict[str, str]:
    """Every registered feature and what switching it off does."""
    return dict(_features)


def features_parse(raw: str | Iterable[str], *, known: Iterable[str] | None = None) -> list[str]:
    """``"learning, causal"`` -> ``["learning", "causal"]``; with ``known``, a name outside
    it is refused with ``InvalidFeatures``."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    allowed = None if known is None else set(known)
    names = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if allowed is not None and name not in allowed:
            raise InvalidFeatures(
                f"GRACE_DISABLED_FEATURES names an unknown feature {name!r}; "
                f"known features: {', '.join(sorted(allowed))}."
            )
        if name not in names:
            names.append(name)
    return names


def features_disabled() -> frozenset[str]:
    """The names in ``GRACE_DISABLED_FEATURES`` (registered or not: the check reports
    unknown ones)."""
    raw = (getattr(settings, "GRACE", {}) or {}).get("DISABLED_FEATURES", ())
    return _disabled_of(raw if isinstance(raw, str) else tuple(raw))


@functools.lru_cache(maxsize=16)
def _disabled_of(raw: str | tuple[str, ...]) -> frozenset[str]:
    """``raw`` parsed once per distinct value (asked for every metric and observation)."""
    return frozenset(features_parse(raw))


@dataclass(frozen=True)
class Dependency:
    module: str
    """What ``import`` needs."""
    needed_by: str
    """What stops working without it (a sentence for the log and the check)."""
    features: tuple[str, ...] = ()
    """Features switched off while it is missing."""


def dependency_source_register(source: Callable[[], list[Dependency]]) -> None:
    """Add a function naming the optional packages an app's current settings rely on."""
    if source not in _dependency_sources:
        _dependency_sources.append(source)


def dependencies() -> list[Dependency]:
    """The optional packages the current settings rely on."""
    found = [Dependency("prometheus_client", "GET /api/metrics (Prometheus text format)")]
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {}).get("BACKEND", "")
    if layer:
        module = layer.rsplit(".", 1)[0]
        found.append(
            Dependency(module, f"the channel layer {layer} (event bus, /ws/events/)", ("events",))
        )
    engines = {config.get("ENGINE", "") for config in settings.DATABASES.values()}
    if any("postgresql" in engine for engine in engines):
        found.append(Dependency("psycopg", "the PostgreSQL databases"))
    for source in _dependency_sources:
        found.extend(source())
    return found


def module_problem(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None (usable from settings: logs nothing)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # an ImportError, or any error raised by the package itself
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


_import_problems: dict[str, str | None] = {}
_import_lock = threading.Lock()


def dependency_problem(module: str) -> str | None:
    """Why ``module`` cannot be imported (``None``: it can). Tried once per process; the
    first failure is logged once."""
    with _import_lock:
        if module in _import_problems:
            return _import_problems[module]
    problem = module_problem(module)
    with _import_lock:
        if module not in _import_problems:
            _import_problems[module] = problem
            if problem is not None:
                needed = [d.needed_by for d in _safe_dependencies() if d.module == module]
                logger.warning(
                    "optional dependency %s cannot be imported (%s): switched off: %s",
                    module, problem, "; ".join(needed) or "what needs it",
                )
        return _import_problems[module]


def _safe_dependencies() -> list[Dependency]:
    try:
        return dependencies()
    except Exception:
        return []


def dependencies_forget() -> None:
    """Try every import again (tests, after installing a package)."""
    with _import_lock:
        _import_problems.clear()


def feature_enabled(name: str) -> bool:
    """False when ``name`` is in ``GRACE_DISABLED_FEATURES`` or lacks a dependency.
    Cheap: called for every metric and every observation."""
    if name in features_disabled():
        return False
    if name == "events":
        return _channel_layer_importable()
    return True


def _channel_layer_importable() -> bool:
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    backend = str(layers.get("default", {}).get("BACKEND", ""))
    if not backend:
        return False
    return dependency_problem(backend.rsplit(".", 1)[0]) is None


def channel_layer_fallback() -> str:
    """The sentence for a Redis channel layer replaced by the in-memory one (settings set
    ``GRACE["CHANNEL_LAYER_FALLBACK"]`` to the import problem), or ""."""
    problem = ops_settings.CHANNEL_LAYER_FALLBACK
    if not problem:
        return ""
    return (
        f"REDIS_URL is set but channels_redis cannot be imported ({problem}): the in-memory "
        "channel layer is used, so events and websocket groups stay within each process."
    )


def features_startup_log() -> None:
    """One log line per switched-off part, at start-up (the system check repeats them)."""
    fallback = channel_layer_fallback()
    if fallback:
        logger.warning("%s", fallback)
    dependency_problem("prometheus_client")


def features_check(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``grace.W010``: an optional dependency that cannot be imported;
    ``grace.I011``: the features switched off by settings;
    ``grace.E022``: ``GRACE_DISABLED_FEATURES`` names a feature nobody registered."""
    messages: list[Any] = []
    try:
        features_parse(sorted(features_disabled()), known=_features)
    except InvalidFeatures as exc:
        messages.append(Error(str(exc), id="grace.E022"))
    for dependency in _safe_dependencies():
        problem = dependency_problem(dependency.module)
        if problem:
            messages.append(
                Warning(
                    f"Optional dependency {dependency.module} cannot be imported ({problem}).",
                    hint=f"Switched off: {dependency.needed_by}. Install it (pip install "
                    "-e .[scale] for channels-redis and psycopg) or change the settings.",
                    id="grace.W010",
                )
            )
    fallback = channel_layer_fallback()
    if fallback:
        messages.append(Warning(fallback, hint="pip install channels-redis (the scale extra), "
                                "or unset REDIS_URL.", id="grace.W010"))
    disabled = sorted(features_disabled())
    if disabled:
        messages.append(
            Info(
                f"Switched off by GRACE_DISABLED_FEATURES: {', '.join(disabled)}.",
                id="grace.I011",
            )
        )
    return messages
