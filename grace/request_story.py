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

from django.contrib.auth import get_user_model
from django.urls import NoReverseMatch, reverse

from grace.models import AuditEntry, ErrorLog

logger = logging.getLogger(__name__)

LIMIT = 200
START_CHARS = 60


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
    ``backend``, ``duration_ms``, ``model``, ``links`` as (label, value, url), ``note``,
    ``stage_notes`` as {stage: why its status differs from the reply's own});
    the first source with a summary describes it. ``describe(request_ids)`` tells the
    list of recent requests what it knows of some of them: ``{request_id: {"who": ...,
    "via": ..., "start": ..., "degraded": ..., "what": ...}}`` (``start``: the first
    ``START_CHARS`` characters of the message as stored, its secrets masked; never raw
    text; ``what``: what to say when there is no ``start``).
    """

    name: str
    title: str
    read: Callable[[str, int], list[Any]]
    moments: Callable[[Any], list[Moment]]
    columns: tuple[str, ...] = ()
    row: Callable[[Any], list[Cell]] | None = None
    summary: Callable[[dict[str, list[Any]]], dict[str, Any] | None] | None = None
    describe: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None
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
    def stage_rows(self) -> list[tuple[str, str, str]]:
        """(stage, status, why it differs from the reply's own status, or "")."""
        notes = dict(self.summary.get("stage_notes", {}))
        return [(stage, status, notes.get(stage, "")) for stage, status in self.stages.items()]

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
        logger.warning("request page: %s unavailable: %s: %s", source.name, type(exc).__name__, exc)
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
            story.sections.append(
                Section(
                    source.name,
                    source.title,
                    source.columns,
                    [source.row(record) for record in records],
                )
            )
    story.timeline = sorted(moments, key=lambda moment: moment.time)
    for source in sources:
        summary = source.summary(story.found_by_source) if source.summary else None
        if summary:
            story.summary = summary
            break
    return story


@dataclass
class RecentRequest:
    """One row of the list of recent requests."""

    request_id: str
    time: datetime
    what: str
    """Its newest audit action (or ``error <status>``): said when nothing better is known."""
    who: str = ""
    """The caller: ``user:<id>`` (with the username where known), ``anonymous:<hash>``."""
    via: str = ""
    """How the caller came: ``token``, ``session`` or ``anonymous`` (when known)."""
    start: str = ""
    """The start of the message it carried, its secrets masked (a source's ``describe``)."""
    degraded: bool | None = None
    """None: not a reply, or not known."""


def _describe(rows: list[RecentRequest]) -> None:
    """Fill in what the sources know of ``rows``; a source that fails is left out."""
    rids = [row.request_id for row in rows]
    for source in story_sources():
        if source.describe is None:
            continue
        try:
            known = source.describe(rids)
        except Exception as exc:
            logger.warning(
                "recent requests: %s unavailable: %s: %s", source.name, type(exc).__name__, exc
            )
            continue
        for row in rows:
            facts = known.get(row.request_id) or {}
            row.who = row.who or str(facts.get("who") or "")
            row.via = row.via or str(facts.get("via") or "")
            row.start = row.start or str(facts.get("start") or "")[:START_CHARS]
            row.what = str(facts.get("what") or row.what)
            if row.degraded is None and facts.get("degraded") is not None:
                row.degraded = bool(facts["degraded"])


def _usernames(rows: list[RecentRequest]) -> None:
    ids = {row.who.removeprefix("user:") for row in rows if row.who.startswith("user:")}
    names = dict(
        get_user_model()
        .objects.filter(pk__in=[pk for pk in ids if pk.isdigit()])
        .values_list("pk", "username")
    )
    for row in rows:
        if row.who.startswith("user:"):
            name = names.get(int(row.who.removeprefix("user:") or 0))
            if name:
                row.who = f"{row.who} ({name})"


def recent_requests(*, limit: int = 15) -> list[RecentRequest]:
    """The newest request IDs in the audit log and the error log, each with who sent it,
    the start of its message and whether its reply was degraded (from the sources'
    ``describe``). Both reads walk an index from its newest end."""
    seen: dict[str, RecentRequest] = {}
    for rid, created, action, actor in (
        AuditEntry.objects.exclude(request_id="")
        .order_by("-sequence")
        .values_list("request_id", "created", "action", "actor")[: limit * 8]
    ):
        row = seen.setdefault(rid, RecentRequest(rid, created, action))
        if actor and actor != "system":
            row.who = actor
    for rid, created, status in (
        ErrorLog.objects.exclude(request_id="")
        .order_by("-created")
        .values_list("request_id", "created", "status")[:limit]
    ):
        known = seen.get(rid)
        if known is None:
            seen[rid] = RecentRequest(rid, created, f"error {status}")
        elif known.time < created:
            known.time, known.what = created, f"error {status}"
    rows = sorted(seen.values(), key=lambda row: row.time, reverse=True)[:limit]
    _describe(rows)
    _usernames(rows)
    return rows


def recent_request_ids(*, limit: int = 15) -> list[tuple[str, datetime, str]]:
    """``recent_requests`` as (ID, time, what) tuples."""
    return [(row.request_id, row.time, row.what) for row in recent_requests(limit=limit)]
