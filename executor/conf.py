"""Executor settings with their defaults, and the backend's OPTIONS, validated.

Worker settings live in ``settings.EXECUTOR`` and are read when used (django-cors-headers
style), so ``override_settings`` and the pytest ``settings`` fixture just work. The
backend's ``OPTIONS`` (in ``TASKS``) are checked by ``options_problems``: the system checks
report each problem with its id and the backend refuses to load with the first one. Each
default is written here once, in its spec (grace/conf.py); grace/settings.py reads the
environment with these specs. Nothing here may need configured settings at import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from grace.conf import AppSettings, Setting

# The worker's bounds, shared by its settings and ``run_executor``'s arguments.
CONCURRENCY_MAX = 256  # child processes of one worker
BATCH_MAX = 1000  # tasks claimed per transaction
POLL_INTERVAL_MIN = 0.01
POLL_INTERVAL_MAX = 3600.0  # an hour: past it a worker looks as good as stopped
SECONDS_MAX = 604_800.0  # a week: the longest any seconds option may be
COUNT_MAX = 1_000_000_000  # max_pending, retain_finished (SQL parameters: no overflow)


def _at_most(high: float) -> Callable[[Any], Any]:
    """A ``Setting.check``: refuses a value above ``high`` (inf included)."""

    def check(value: Any) -> Any:
        if not value <= high:
            raise ValueError(f"must be at most {high:g}.")
        return value

    return check


EXECUTOR_SPECS: tuple[Setting, ...] = (
    Setting("GRACE_EXECUTOR_CONCURRENCY", "CONCURRENCY", int, 4,
            "Tasks a `run_executor` runs at a time (child processes).", minimum=1,
            check=_at_most(CONCURRENCY_MAX), type_doc=f"integer, 1 to {CONCURRENCY_MAX}"),
    Setting("GRACE_EXECUTOR_BATCH", "BATCH", int, 32,
            "Tasks a worker claims per transaction.", minimum=1,
            check=_at_most(BATCH_MAX), type_doc=f"integer, 1 to {BATCH_MAX}"),
    Setting("GRACE_EXECUTOR_POLL_INTERVAL", "POLL_INTERVAL", float, 0.5,
            "Seconds between two looks at an empty queue.",
            minimum=POLL_INTERVAL_MIN, check=_at_most(POLL_INTERVAL_MAX),
            type_doc=f"number, {POLL_INTERVAL_MIN:g} to {POLL_INTERVAL_MAX:g}"),
    Setting("GRACE_EXECUTOR_RETRY_AFTER", "RETRY_AFTER", int, 5,
            "The `Retry-After` (seconds) of a 503 for a full queue.", minimum=1),
    Setting("GRACE_EXECUTOR_API_TASKS", "API_TASKS", list, [],
            "Comma-separated dotted paths of the tasks staff may enqueue with `POST "
            "/api/tasks/` (docs/executor.md)."),
    Setting("GRACE_HEALTH_QUEUE_MAX_AGE", "HEALTH_QUEUE_MAX_AGE", float, 300.0,
            "An older READY task makes `/api/health` report the queue `stale` (still ok).",
            minimum=1),
)

# The backend's OPTIONS (``TASKS[alias]["OPTIONS"]``), checked by ``options_problems``
# (executor.E001..) rather than at parse time.
OPTION_SPECS: tuple[Setting, ...] = (
    Setting("GRACE_EXECUTOR_MAX_PENDING", "max_pending", int, 10_000,
            "READY tasks a queue may hold; enqueue beyond raises `QueueFull` (503 on the API).",
            type_doc="integer, 1 to 10^9"),
    Setting("GRACE_EXECUTOR_RETAIN_FINISHED", "retain_finished", int, 1_000,
            "Finished tasks kept (the newest); older ones are pruned.",
            type_doc="integer, 0 to 10^9"),
    Setting("GRACE_EXECUTOR_DEFAULT_TIMEOUT", "default_timeout", float, 300.0,
            "Seconds an attempt may run unless its `@task(timeout=...)` says otherwise.",
            type_doc="number, above 0, at most 604800 (a week)"),
    Setting("GRACE_EXECUTOR_MAX_ATTEMPTS", "max_attempts", int, 3,
            "Attempts per task unless its `@task(max_attempts=...)` says otherwise.",
            type_doc="integer, 1 to 100"),
    Setting("GRACE_EXECUTOR_LEASE_SECONDS", "lease_seconds", float, 30.0,
            "A worker's hold on a task, renewed every third of it; expired: another worker "
            "reruns it.",
            type_doc="number, 1 to 604800 (a week)"),
    Setting("GRACE_EXECUTOR_SHUTDOWN_GRACE_SECONDS", "shutdown_grace_seconds", float, 20.0,
            "On SIGTERM, how long running tasks may take to finish.",
            type_doc="number, 0 to 604800 (a week)"),
    Setting("GRACE_EXECUTOR_RETRY_BACKOFF", "retry_backoff", float, 2.0,
            "Seconds before the first retry; doubles per attempt, with jitter.",
            type_doc="number, 0 to 604800 (a week)"),
    Setting("GRACE_EXECUTOR_RETRY_BACKOFF_MAX", "retry_backoff_max", float, 300.0,
            "Longest pause between two attempts.",
            type_doc="number, `retry_backoff` to 604800 (a week)"),
)
OPTION_DEFAULTS: dict[str, Any] = {spec.key: spec.default for spec in OPTION_SPECS}
QUEUE_NAME_MAX = 64


@dataclass(frozen=True)
class ExecutorOptions:
    """The resolved OPTIONS of one executor backend (``OPTION_SPECS`` says what each means)."""

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


def _count(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and low <= v <= COUNT_MAX), f"a whole number {low} to {COUNT_MAX}"


def _seconds(low: float, *, above: bool = False) -> tuple[Callable[[Any], bool], str]:
    """A finite number of seconds: NaN and inf are refused, and so is anything past a week
    (a lease or a backoff that far ahead overflows the dates it is added to)."""

    def valid(v: Any) -> bool:
        return (_is_number(v) and math.isfinite(v) and (v > low if above else v >= low)
                and v <= SECONDS_MAX)

    return valid, f"seconds {'>' if above else '>='} {low:g} and <= {SECONDS_MAX:g} (a week)"


# name -> (check id, predicate, what a valid value is)
_RULES: dict[str, tuple[str, Any, str]] = {
    "max_pending": ("executor.E002", *_count(1)),
    "retain_finished": ("executor.E003", *_count(0)),
    "default_timeout": ("executor.E004", *_seconds(0, above=True)),
    "max_attempts": ("executor.E005", lambda v: _is_int(v) and 1 <= v <= 100, "1 to 100"),
    "lease_seconds": ("executor.E006", *_seconds(1)),
    "shutdown_grace_seconds": ("executor.E007", *_seconds(0)),
    "retry_backoff": ("executor.E008", *_seconds(0)),
    "retry_backoff_max": ("executor.E008", *_seconds(0)),
}


def task_timeout_valid(value: Any) -> bool:
    """A ``@task(timeout=...)``: as ``default_timeout``, finite seconds above 0, at most a week."""
    return bool(_RULES["default_timeout"][1](value))


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


class ExecutorSettings(AppSettings):
    """``settings.EXECUTOR``, read at use."""

    CONCURRENCY: int
    BATCH: int
    POLL_INTERVAL: float
    RETRY_AFTER: int
    API_TASKS: list[str]
    HEALTH_QUEUE_MAX_AGE: float


executor_settings = ExecutorSettings("EXECUTOR", EXECUTOR_SPECS)
