"""Settings from the environment: one ``Setting`` spec per variable, one dict per app.

Each app declares its specs and a reader in its own conf module (``grace/ops_conf.py``,
``chat/conf.py``, ``executor/conf.py``): the default of each value is written there, once.
The settings module (the composition root) reads the environment into the apps' dicts
with ``settings_read``; a value it cannot use is not raised at import but collected in
``GRACE_SETTINGS_PROBLEMS`` and reported by the system check ``grace.E010`` (``migrate``,
``check``, ``run_executor`` and ``make run`` stop on it).

Readers look values up when used (django-cors-headers style), so ``override_settings``
and the pytest ``settings`` fixture work::

    settings.GRACE_CHAT = {**settings.GRACE_CHAT, "ALLOW_ANONYMOUS": True}

Key rule: a key is its variable's name without ``GRACE_`` (and, in ``EXECUTOR``, without
``EXECUTOR_`` too): ``GRACE_THROTTLE_USER`` -> ``GRACE_CHAT["THROTTLE_USER"]``,
``GRACE_EXECUTOR_BATCH`` -> ``EXECUTOR["BATCH"]``.

This module is imported by the settings module: it needs nothing configured at import.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})

TYPE_NAMES: dict[type, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "list (comma-separated)",
}


@dataclass(frozen=True)
class Setting:
    """One environment variable: where its value goes, how it is parsed, its default.

    A spec with an empty ``env`` is a key of the app's dict that no variable sets (its
    default is still written once, here).

    ``check`` is an extra validator of the parsed value: it returns it (possibly
    normalised) or raises ``ValueError`` with the rest of the sentence that follows
    ``NAME='value'`` ("is not a rate: ...").
    With ``family`` (``"STAGE"``), ``env`` is a prefix (``GRACE_TIMEOUT_``): every variable
    that starts with it is read, into ``{rest of the name in lower case: value}``.
    """

    env: str
    key: str
    type: type
    default: Any
    doc: str
    minimum: float | None = None
    clamp: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], Any] | None = None
    family: str = ""
    default_doc: str = ""
    """The default as the reference shows it, when ``default`` alone does not say it."""
    type_doc: str = ""
    """The type as the reference shows it (``"rate"``), when ``type`` alone does not say it."""

    @property
    def variable(self) -> str:
        return f"{self.env}<{self.family}>" if self.family else self.env

    def parse(self, raw: str, *, name: str | None = None) -> Any:
        """The value of ``raw``; ``ImproperlyConfigured`` naming the variable and the value."""
        name = name or self.env
        value: Any
        if self.type is bool:
            word = raw.strip().lower()
            if word not in TRUE | FALSE:
                raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false).")
            value = word in TRUE
        elif self.type is int:
            try:
                value = int(raw)
            except ValueError:
                raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
        elif self.type is float:
            try:
                value = float(raw)
            except ValueError:
                raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
            if math.isnan(value):
                raise ImproperlyConfigured(f"{name}={raw!r} is not a number.")
        elif self.type is list:
            value = [item.strip() for item in raw.split(",") if item.strip()]
        else:
            value = raw
        if self.minimum is not None and value < self.minimum:
            raise ImproperlyConfigured(f"{name}={raw!r} must be at least {self.minimum:g}.")
        if self.clamp is not None:
            value = min(self.clamp[1], max(self.clamp[0], value))
        if self.choices is not None:
            word = str(value).strip().lower()
            value = next((c for c in self.choices if c.lower() == word), None)
            if value is None:
                raise ImproperlyConfigured(
                    f"{name}={raw!r} is not one of {', '.join(self.choices)}."
                )
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as exc:
                raise ImproperlyConfigured(f"{name}={raw!r} {exc}") from None
        return value

    def read(self, environ: Mapping[str, str]) -> Any:
        """The value from ``environ`` (the default when unset, or blank for a number or a
        choice)."""
        if self.family:
            return {
                name[len(self.env):].lower(): self.parse(raw, name=name)
                for name, raw in sorted(environ.items())
                if name.startswith(self.env) and len(name) > len(self.env)
            }
        raw = environ.get(self.env)
        if raw is None or (raw.strip() == "" and (self.type in (int, float) or self.choices)):
            return self.default
        return self.parse(raw)


def settings_read(
    specs: Iterable[Setting], environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Read ``specs`` from ``environ`` (``os.environ``) into ``{key: value}``.

    Never raises for a bad value: the value keeps its default and the problem (a sentence
    naming the variable and the value) is returned, for the system check ``grace.E010``.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in specs:
        if not spec.env:  # not configured from the environment
            values[spec.key] = spec.default
            continue
        try:
            values[spec.key] = spec.read(environ)
        except ImproperlyConfigured as exc:
            values[spec.key] = spec.default
            problems.append(str(exc))
    return values, problems


class AppSettings:
    """An app's settings dict, read at use: ``reader.KEY`` is ``settings.<NAME>[KEY]``, or
    the spec's default when the dict (or the key) is missing.

    Subclasses declare each key's type as a class annotation (``ALLOW_ANONYMOUS: bool``)
    and add properties for values derived from several keys.
    """

    def __init__(self, name: str, specs: Sequence[Setting]) -> None:
        self._name = name
        self._defaults = {spec.key: spec.default for spec in specs}

    def _get(self, key: str) -> Any:
        values = getattr(settings, self._name, None) or {}
        return values.get(key, self._defaults[key])

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or key not in self._defaults:
            raise AttributeError(f"{type(self).__name__} has no setting {key!r}")
        return self._get(key)


# --- The reference (docs/settings.md), from the specs the apps register -----------------


@dataclass(frozen=True)
class SpecGroup:
    setting: str
    """Where the values go: the dict's name (``GRACE_CHAT``), or "" for Django's settings."""
    title: str
    specs: tuple[Setting, ...]
    about: str = ""


_groups: dict[str, SpecGroup] = {}


def settings_specs_register(
    setting: str, specs: Sequence[Setting], *, title: str, about: str = ""
) -> None:
    """Add an app's specs to the reference (from ``AppConfig.ready()``; idempotent)."""
    _groups[title] = SpecGroup(setting, title, tuple(specs), about)


def settings_specs() -> list[SpecGroup]:
    return list(_groups.values())


def _default_text(spec: Setting) -> str:
    if spec.default_doc:
        return spec.default_doc
    value = spec.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | tuple):
        return f"`{','.join(map(str, value))}`" if value else "(none)"
    if value == "":
        return "(empty)"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _type_text(spec: Setting) -> str:
    if spec.type_doc:
        return spec.type_doc
    if spec.choices:
        return " \\| ".join(f"`{choice}`" for choice in spec.choices)
    text = TYPE_NAMES.get(spec.type, spec.type.__name__)
    if spec.clamp is not None:
        text += f", {spec.clamp[0]:g} to {spec.clamp[1]:g} (clamped)"
    elif spec.minimum is not None:
        text += f", at least {spec.minimum:g}"
    return text


def settings_reference(groups: Sequence[SpecGroup] | None = None) -> str:
    """The Markdown reference of every registered variable, grouped by app."""
    lines = [
        "# Settings reference",
        "",
        "<!-- Generated by `.venv/bin/python manage.py settings_reference > docs/settings.md`"
        " from the specs in each app's conf module; edit those, not this file. -->",
        "",
        "Every setting comes from an environment variable. A value that cannot be used is "
        "reported by the system check `grace.E010` (naming the variable and the value), "
        "which stops `migrate`, `make run` and `run_executor` before anything serves.",
    ]
    for group in settings_specs() if groups is None else groups:
        lines += ["", f"## {group.title}"]
        if group.setting:
            lines += ["", f"Read into `{group.setting}`."]
        if group.about:
            lines += ["", group.about]
        lines += ["", "| variable | key | type | default | meaning |", "|---|---|---|---|---|"]
        for spec in group.specs:
            if not spec.env:
                continue
            doc = spec.doc.replace("|", "\\|")
            lines.append(
                f"| `{spec.variable}` | `{spec.key}` | {_type_text(spec)} | "
                f"{_default_text(spec)} | {doc} |"
            )
    return "\n".join(lines) + "\n"

