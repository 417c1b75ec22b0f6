"""Writing metric batches to the ``metrics`` database, and pruning it.

One batch is one transaction: the raw events (``bulk_create``, in steps), then an upsert
(``INSERT ... ON CONFLICT DO UPDATE``, SQLite 3.24+ and PostgreSQL) that adds the batch's
per-minute figures to ``MetricRollup`` and its totals to ``MetricTotal``, so processes
flushing at the same time add up instead of overwriting each other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from grace.background import database_writable
from grace.metrics.catalog import CATALOG, COUNTER, HISTOGRAM, bucket_for
from grace.metrics.models import MetricEvent, MetricRollup, MetricTotal
from grace.ops_conf import ops_settings
from grace.routers import METRICS_DB

# (name, label values in catalog order, value, unix time, request ID)
Event = tuple[str, tuple[str, ...], float, float, str]


def labels_json(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def metrics_db_writable() -> bool:
    return database_writable(METRICS_DB)


def _minute(ts: float) -> datetime:
    return datetime.fromtimestamp(math.floor(ts / 60) * 60, tz=UTC)


def _upsert_sql(
    table: str, *, key: Sequence[str], adds: Sequence[str], peak: str | None = None,
    stamp: str | None = None, vendor: str, quote: Any,
) -> str:
    """``INSERT ... ON CONFLICT (key) DO UPDATE``: ``adds`` are summed, ``peak`` keeps the
    larger value, ``stamp`` takes the new one."""
    columns = [*key, *adds, *(c for c in (peak, stamp) if c)]
    names = ", ".join(quote(c) for c in columns)
    placeholders = ", ".join(["%s"] * len(columns))
    current = quote(table)
    sets = [f"{quote(c)} = {current}.{quote(c)} + EXCLUDED.{quote(c)}" for c in adds]
    if peak:
        greatest = "GREATEST" if vendor == "postgresql" else "MAX"
        sets.append(f"{quote(peak)} = {greatest}({current}.{quote(peak)}, EXCLUDED.{quote(peak)})")
    if stamp:
        sets.append(f"{quote(stamp)} = EXCLUDED.{quote(stamp)}")
    return (
        f"INSERT INTO {current} ({names}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(quote(c) for c in key)}) DO UPDATE SET {', '.join(sets)}"
    )


_EVENT_FIELDS = ("name", "value", "labels", "request_id", "created")
_LABELS_FIELD = MetricEvent._meta.get_field("labels")
_CREATED_FIELD = MetricEvent._meta.get_field("created")


def _raw_insert_sql(quote: Any) -> str:
    columns = ", ".join(quote(name) for name in _EVENT_FIELDS)
    table = quote(MetricEvent._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s)"  # noqa: S608


def metrics_write(events: Sequence[Event]) -> int:
    """Store one batch; return how many events it held."""
    keep_raw = ops_settings.METRICS_EVENTS_HOURS > 0
    rollups: dict[tuple[float, str, str], list[float]] = {}
    totals: dict[tuple[str, str], list[float]] = {}
    raw: list[tuple[str, float, dict[str, str], str, datetime]] = []
    for name, values, value, ts, request_id in events:
        metric = CATALOG.get(name)
        if metric is None:
            continue
        labels = dict(zip(metric.labels, values, strict=False))
        key = labels_json(labels)
        minute_ts = math.floor(ts / 60) * 60
        rollup = rollups.setdefault((minute_ts, name, key), [0, 0.0, value])
        rollup[0] += 1
        rollup[1] += value
        rollup[2] = max(rollup[2], value)
        if metric.kind == HISTOGRAM:
            total = totals.setdefault((name, labels_json({**labels, "le": bucket_for(value)})),
                                      [0, 0.0])
        elif metric.kind == COUNTER:
            total = totals.setdefault((name, key), [0, 0.0])
        else:
            total = None
        if total is not None:
            total[0] += 1
            total[1] += value
        if keep_raw and metric.raw:
            raw.append((name, value, labels, request_id[:64], datetime.fromtimestamp(ts, tz=UTC)))
    connection = connections[METRICS_DB]
    ops, quote, vendor = connection.ops, connection.ops.quote_name, connection.vendor
    rollup_sql = _upsert_sql(
        MetricRollup._meta.db_table, key=("minute", "name", "labels"), adds=("count", "total"),
        peak="peak", vendor=vendor, quote=quote,
    )
    total_sql = _upsert_sql(
        MetricTotal._meta.db_table, key=("name", "labels"), adds=("count", "total"),
        stamp="updated", vendor=vendor, quote=quote,
    )
    now = ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic(using=METRICS_DB), connection.cursor() as cursor:
        if raw:  # one statement for every row (the ORM's bulk_create cost 0.1 ms a row)
            cursor.executemany(_raw_insert_sql(quote), [
                (name, value, _LABELS_FIELD.get_db_prep_save(labels, connection), rid,
                 _CREATED_FIELD.get_db_prep_save(created, connection))
                for name, value, labels, rid, created in raw
            ])
        if rollups:
            cursor.executemany(rollup_sql, [
                (ops.adapt_datetimefield_value(_minute(m)), name, key, int(c), s, p)
                for (m, name, key), (c, s, p) in rollups.items()
            ])
        if totals:
            cursor.executemany(total_sql, [
                (name, key, int(c), s, now) for (name, key), (c, s) in totals.items()
            ])
    return len(events)


def metrics_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Delete rollups older than ``GRACE_METRICS_RETENTION_DAYS`` and raw events older
    than ``GRACE_METRICS_EVENTS_HOURS``; totals are kept."""
    now = now or timezone.now()
    rollup_cutoff = now - timedelta(days=ops_settings.METRICS_RETENTION_DAYS)
    event_cutoff = now - timedelta(hours=ops_settings.METRICS_EVENTS_HOURS)
    rollups, _ = MetricRollup.objects.using(METRICS_DB).filter(minute__lt=rollup_cutoff).delete()
    events, _ = MetricEvent.objects.using(METRICS_DB).filter(created__lt=event_cutoff).delete()
    return {"rollups": rollups, "events": events}
