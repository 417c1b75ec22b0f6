"""Everything recorded about one request ID, for the admin's request page.

The page is made of sources: the core registers its own (error log, audit log, metrics)
and each app registers what it records (messages, security events, tasks, ...) with
``story_source_register`` from ``AppConfig.ready()``. Each source is read with its own
indexed ``request_id`` lookup (bounded by ``LIMIT``); a source that cannot be read (a
missing table, the metrics database down) is reported as unavailable instead of failing
the page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.urls import NoReverseMatch, reverse

from grace.models import AuditEntry, ErrorLog

logger = logging.getLogger(__name__)

LIMIT = 200


@dataclass
class Moment:
    """One line of the timeline."""

    time: datetime
    source: str
    text: str
    url: str = ""


@dataclass(frozen=True)
class Cell:
    """One cell of a source's table: text, and a link when the cell names a record."""

    text: Any
    url: str = ""
    css: str = ""


@dataclass(frozen=True)
class StorySource:
    """What one part recorded under a request ID.

    ``read(request_id, limit)`` returns the records; ``moments(record)`` the timeline
    lines of one record; ``columns`` and ``row(record)`` its table on the page (no
    columns: timeline only); ``summary(found)``, given every source's records by name,
    may describe the reply the request got (``stages``, ``flags``, ``degraded``,
    ``backend``, ``duration_ms``, ``model``, ``links`` as (label, value, url), ``note``);
    the first source with a summary describes it.
    """

    name: str
    title: str
    read: Callable[[str, int], list[Any]]
    moments: Callable[[Any], list[Moment]]
    columns: tuple[str, ...] = ()
    row: Callable[[Any], list[Cell]] | None = None
    summary: Callable[[dict[str, list[Any]]], dict[str, Any] | None] | None = None
    order: int = 50


_sources: dict[str, StorySource] = {}


def story_source_register(source: StorySource) -> None:
    """Add (or replace) a source of the request page."""
    _sources[source.name] = source


def story_sources() -> list[StorySource]:
    return sorted(_sources.values(), key=lambda source: (source.order, source.name))


@dataclass
class Section:
    name: str
    title: str
    columns: tuple[str, ...]
    rows: list[list[Cell]]

    @property
    def anchor(self) -> str:
        return self.name.replace(" ", "-").replace("_", "-")


@dataclass
class RequestStory:
    request_id: str
    found_by_source: dict[str, list[Any]] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    timeline: list[Moment] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return any(self.found_by_source.values())

    @property
    def stages(self) -> dict[str, str]:
        return dict(self.summary.get("stages", {}))

    @property
    def flags(self) -> list[str]:
        return list(self.summary.get("flags", []))

    @property
    def degraded(self) -> bool:
        return bool(self.summary.get("degraded"))


def admin_url(obj: Any) -> str:
    meta = obj._meta
    try:
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return ""


def _read(story: RequestStory, source: StorySource, rid: str) -> list[Any]:
    try:
        return list(source.read(rid, LIMIT))
    except Exception as exc:
        logger.warning("request page: %s unavailable: %s: %s", source.name,
                       type(exc).__name__, exc)
        story.unavailable[source.name] = f"{type(exc).__name__}: {exc}"[:200]
        return []


def request_story(*, request_id: str) -> RequestStory:
    rid = request_id.strip()[:64]
    story = RequestStory(request_id=rid)
    sources = story_sources()
    for source in sources:
        story.found_by_source[source.name] = _read(story, source, rid)
    moments: list[Moment] = []
    for source in sources:
        records = story.found_by_source[source.name]
        for record in records:
            moments.extend(source.moments(record))
        if source.columns and source.row is not None:
            story.sections.append(Section(source.name, source.title, source.columns,
                                          [source.row(record) for record in records]))
    story.timeline = sorted(moments, key=lambda moment: moment.time)
    for source in sources:
        summary = source.summary(story.found_by_source) if source.summary else None
        if summary:
            story.summary = summary
            break
    return story


def recent_request_ids(*, limit: int = 15) -> list[tuple[str, datetime, str]]:
    """The newest request IDs in the audit log and the error log: (ID, time, what), to
    click through. Both reads walk an index from its newest end."""
    seen: dict[str, tuple[str, datetime, str]] = {}
    for rid, created, action in (
        AuditEntry.objects.exclude(request_id="").order_by("-sequence")
        .values_list("request_id", "created", "action")[: limit * 8]
    ):
        if rid not in seen:
            seen[rid] = (rid, created, action)
    for rid, created, status in (
        ErrorLog.objects.exclude(request_id="").order_by("-created")
        .values_list("request_id", "created", "status")[:limit]
    ):
        if rid not in seen or seen[rid][1] < created:
            seen[rid] = (rid, created, f"error {status}")
    return sorted(seen.values(), key=lambda row: row[1], reverse=True)[:limit]
