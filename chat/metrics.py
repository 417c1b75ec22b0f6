"""The chat app's metric families, its gauge (each reply backend's circuit) and the
optional packages its settings rely on; registered from ``ChatConfig.ready()``."""

from __future__ import annotations

from django.utils.module_loading import import_string

from chat.backends.breaker import breaker_get
from chat.backends.local import LocalBackend
from chat.conf import chat_settings
from grace.features import Dependency
from grace.metrics.catalog import COUNTER, GAUGE, HISTOGRAM, Metric

METRICS: tuple[Metric, ...] = (
    Metric(
        "chat_replies",
        COUNTER,
        "Chat replies by backend and whether degraded.",
        ("backend", "degraded"),
    ),
    Metric("chat_reply_duration_seconds", HISTOGRAM, "Seconds the pipeline took.", raw=True),
    Metric("chat_degraded_flags", COUNTER, "Flags carried by degraded replies.", ("flag",)),
    Metric(
        "chat_stage_outcomes",
        COUNTER,
        "Pipeline stage outcomes (ok, timeout, error, skipped, ...).",
        ("stage", "status"),
    ),
    Metric(
        "security_events", COUNTER, "Hunter rule matches by kind and action.", ("kind", "action")
    ),
    Metric("model_requests", COUNTER, "Reply backend calls by outcome.", ("backend", "outcome")),
    Metric(
        "model_latency_seconds",
        HISTOGRAM,
        "Seconds a reply backend call took.",
        ("backend",),
        raw=True,
    ),
    Metric(
        "model_first_token_seconds", HISTOGRAM, "Seconds to a backend's first token.", ("backend",)
    ),
    Metric(
        "model_tokens",
        COUNTER,
        "Tokens by backend and kind (prompt, completion).",
        ("backend", "kind"),
    ),
    Metric(
        "circuit_breaker_state",
        GAUGE,
        "Reply backend circuit: 0 closed, 1 half-open, 2 open (scraped process).",
        ("backend",),
    ),
)

BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}

MODEL_OUTCOMES = {"llm_timeout": "timeout", "llm_error": "error"}
"""A respond stage whose model timed out or failed (the fallback answered, or the partial
reply was kept) counts as a respond timeout or error (docs/operations.md)."""


def stage_outcomes(stages: dict[str, str], flags: list[str]) -> dict[str, str]:
    """The operator's status of each stage of one reply: ``metadata.stages``, except that
    an ``ok`` respond stage whose model timed out (``llm_timeout``) is a ``timeout`` and one
    whose model failed (``llm_error``) an ``error``. The dashboard's counts
    (``chat_stage_outcomes``) and the request page both use it, so they agree."""
    outcomes = dict(stages)
    if outcomes.get("respond") == "ok":
        for flag, status in MODEL_OUTCOMES.items():
            if flag in flags:
                outcomes["respond"] = status
                break
    return outcomes


def breaker_states() -> list[tuple[str, dict[str, str], float]]:
    """``circuit_breaker_state`` of every configured reply backend, in this process."""
    return [
        (
            "circuit_breaker_state",
            {"backend": alias},
            BREAKER_VALUES.get(breaker_get(alias).state, 0.0),
        )
        for alias in sorted(chat_settings.REPLY_BACKENDS)
    ]


def chat_dependencies() -> list[Dependency]:
    """xllamacpp while the primary backend is the embedded model."""
    config = chat_settings.REPLY_BACKENDS.get(chat_settings.REPLY_BACKEND, {})
    try:
        local = issubclass(import_string(config.get("BACKEND", "")), LocalBackend)
    except (ImportError, TypeError):  # a backend that cannot load is chat.E002's to report
        return []
    if local:
        return [Dependency("xllamacpp", "the embedded model (replies come from the fallback)")]
    return []
