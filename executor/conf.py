"""Executor settings with their defaults, and the backend's OPTIONS, validated.

Worker settings are read when used (django-cors-headers style), so ``override_settings``
and the pytest ``settings`` fixture just work. The backend's ``OPTIONS`` (in ``TASKS``) are
checked by ``options_problems``: the system checks report each problem with its id and the
backend refuses to load with the first one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings

# Defaults of the backend OPTIONS (``TASKS[alias]["OPTIONS"]``).
OPTION_DEFAULTS: dict[str, Any] = {
    "max_pending": 10_000,
    "retain_finished": 1_000,
    "default_timeout": 300.0,
    "max_attempts": 3,
    "lease_seconds": 30.0,
    "shutdown_grace_seconds": 20.0,
    "retry_backoff": 2.0,
    "retry_backoff_max": 300.0,
}
QUEUE_NAME_MAX = 64


@dataclass(frozen=True)
class ExecutorOptions:
    """The resolved OPTIONS of one executor backend (see the README for each)."""

    max_pending: int
    retain_finished: int
    default_timeout: float
    max_attempts: int
    lease_seconds: float
    shutdown_grace_seconds: float
    retry_backoff: float
    retry_backoff_max: float

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ExecutorOptions:
        values = {**OPTION_DEFAULTS, **options}
        return cls(**{f.name: values[f.name] for f in fields(cls)})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# name -> (check id, predicate, what a valid value is)
_RULES: dict[str, tuple[str, Any, str]] = {
    "max_pending": ("executor.E002", lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "retain_finished": ("executor.E003", lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "default_timeout": ("executor.E004", lambda v: _is_number(v) and v > 0, "seconds > 0"),
    "max_attempts": ("executor.E005", lambda v: _is_int(v) and 1 <= v <= 100, "1 to 100"),
    "lease_seconds": ("executor.E006", lambda v: _is_number(v) and v >= 1, "seconds >= 1"),
    "shutdown_grace_seconds": ("executor.E007", lambda v: _is_number(v) and v >= 0, "seconds >= 0"),
    "retry_backoff": ("executor.E008", lambda v: _is_number(v) and v >= 0, "seconds >= 0"),
    "retry_backoff_max": ("executor.E008", lambda v: _is_number(v) and v >= 0, "seconds >= 0"),
}


def options_problems(alias: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem of one ``TASKS`` entry as ``(check id, message)``; empty when valid."""
    problems: list[tuple[str, str]] = []
    options = params.get("OPTIONS", {})
    if not isinstance(options, dict):
        return [("executor.E001", f"TASKS[{alias!r}]['OPTIONS'] must be a dict.")]
    for name in sorted(set(options) - set(OPTION_DEFAULTS)):
        known = ", ".join(OPTION_DEFAULTS)
        problems.append(
            ("executor.E001", f"TASKS[{alias!r}]['OPTIONS'] has an unknown option {name!r}; "
             f"known: {known}.")
        )
    for name, (check_id, valid, expected) in _RULES.items():
        if name in options and not valid(options[name]):
            problems.append(
                (check_id, f"TASKS[{alias!r}]['OPTIONS'][{name!r}] = {options[name]!r} "
                 f"is invalid: it must be {expected}.")
            )
    if not problems:
        resolved = ExecutorOptions.from_options(options)
        if resolved.retry_backoff_max < resolved.retry_backoff:
            problems.append(
                ("executor.E008", f"TASKS[{alias!r}]['OPTIONS']: retry_backoff_max "
                 f"({resolved.retry_backoff_max}) is below retry_backoff "
                 f"({resolved.retry_backoff}).")
            )
    queues = params.get("QUEUES", ["default"])
    if (
        not isinstance(queues, list | tuple)
        or not queues
        or not all(isinstance(q, str) and 0 < len(q) <= QUEUE_NAME_MAX for q in queues)
    ):
        problems.append(
            ("executor.E009", f"TASKS[{alias!r}]['QUEUES'] = {queues!r} is invalid: it must be "
             f"a non-empty list of names of 1 to {QUEUE_NAME_MAX} characters.")
        )
    return problems


class ExecutorSettings:
    """Worker settings (``run_executor`` defaults); read at use, never cached."""

    @property
    def CONCURRENCY(self) -> int:  # noqa: N802
        return int(getattr(settings, "EXECUTOR_CONCURRENCY", 4))

    @property
    def BATCH(self) -> int:  # noqa: N802
        return int(getattr(settings, "EXECUTOR_BATCH", 32))

    @property
    def POLL_INTERVAL(self) -> float:  # noqa: N802
        return float(getattr(settings, "EXECUTOR_POLL_INTERVAL", 0.5))

    @property
    def RETRY_AFTER(self) -> int:  # noqa: N802
        """Seconds a client is told to wait (``Retry-After``) when a queue is full."""
        return int(getattr(settings, "EXECUTOR_RETRY_AFTER", 5))

    @property
    def API_TASKS(self) -> list[str]:  # noqa: N802
        """Dotted paths of the tasks staff may enqueue with ``POST /api/tasks/``."""
        return list(getattr(settings, "EXECUTOR_API_TASKS", []))


executor_settings = ExecutorSettings()
