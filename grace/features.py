"""Feature switches and optional dependencies.

``GRACE_DISABLED_FEATURES=learning,causal`` switches optional parts off:

=============  ==========================================================================
``inspection``  the inspect stage (Hunter) does not run: it reports ``skipped``
``recall``      the recall stage does not run: it reports ``skipped``
``learning``    the followup stage enqueues no learning capture
``causal``      the followup stage enqueues no causal tracking (both off: ``skipped``)
``audit``       nothing is appended to the audit log
``events``      nothing is published on the event bus; ``/ws/events/`` is closed
``metrics``     no metric events are recorded; ``/api/metrics`` answers 503
=============  ==========================================================================

A switched-off stage reports ``skipped`` without a flag: it does not make a reply
degraded.

An optional package that is missing or fails to import switches off only what needs it,
with one log line per process and a system check warning (``grace.W010``): nothing
crashes at import. This module is imported by grace/settings.py, so at import it needs
nothing but Django's exception class.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = (
    "inspection", "recall", "learning", "causal", "audit", "events", "metrics",
)
# Pipeline stages that a feature switch turns off (followup: when both of its parts are).
STAGE_FEATURES: dict[str, tuple[str, ...]] = {
    "inspect": ("inspection",),
    "recall": ("recall",),
    "followup": ("learning", "causal"),
}


class InvalidFeatures(ImproperlyConfigured):
    """``GRACE_DISABLED_FEATURES`` names a feature that does not exist."""


def features_parse(raw: str | Iterable[str]) -> list[str]:
    """``"learning, causal"`` -> ``["learning", "causal"]``; unknown names refused."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name not in FEATURES:
            raise InvalidFeatures(
                f"GRACE_DISABLED_FEATURES names an unknown feature {name!r}; "
                f"known features: {', '.join(FEATURES)}."
            )
        if name not in names:
            names.append(name)
    return names


@dataclass(frozen=True)
class Dependency:
    module: str
    """What ``import`` needs."""
    needed_by: str
    """What stops working without it (a sentence for the log and the check)."""
    features: tuple[str, ...] = ()
    """Features switched off while it is missing."""


def dependencies() -> list[Dependency]:
    """The optional packages the current settings rely on."""
    from django.conf import settings

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
    backends = getattr(settings, "GRACE_REPLY_BACKENDS", {})
    primary = backends.get(getattr(settings, "GRACE_REPLY_BACKEND", ""), {})
    if str(primary.get("BACKEND", "")).endswith("LocalBackend"):
        found.append(
            Dependency("xllamacpp", "the embedded model (replies come from the fallback)")
        )
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
    from django.conf import settings

    disabled = getattr(settings, "GRACE_DISABLED_FEATURES", ())
    if isinstance(disabled, str):
        disabled = features_parse(disabled)
    if name in disabled:
        return False
    if name == "events":
        return _channel_layer_importable()
    return True


def _channel_layer_importable() -> bool:
    from django.conf import settings

    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    backend = str(layers.get("default", {}).get("BACKEND", ""))
    if not backend:
        return False
    return dependency_problem(backend.rsplit(".", 1)[0]) is None


def stage_disabled(stage: str) -> bool:
    """A pipeline stage that its feature switches turn off entirely (reports ``skipped``)."""
    features = STAGE_FEATURES.get(stage, ())
    return bool(features) and not any(feature_enabled(name) for name in features)


def channel_layer_fallback() -> str:
    """The sentence for a Redis channel layer replaced by the in-memory one (settings set
    ``GRACE_CHANNEL_LAYER_FALLBACK`` to the import problem), or ""."""
    from django.conf import settings

    problem = getattr(settings, "GRACE_CHANNEL_LAYER_FALLBACK", "")
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
    ``grace.I011``: the features switched off by settings."""
    from django.core.checks import Info, Warning

    from grace.ops_conf import ops_settings

    messages: list[Any] = []
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
    disabled = sorted(ops_settings.DISABLED_FEATURES)
    if disabled:
        messages.append(
            Info(
                f"Switched off by GRACE_DISABLED_FEATURES: {', '.join(disabled)}.",
                id="grace.I011",
            )
        )
    return messages
