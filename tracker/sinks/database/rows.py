"""Converting between :class:`~tracker.Execution` records and table rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from ..._record import Execution, Origin, Status


def to_row(e: Execution) -> dict[str, Any]:
    return {
        "run_id": e.run_id,
        "job_id": e.job_id,
        "job_name": e.job_name,
        "status": e.status.value,
        "scheduled_at": e.scheduled_at,
        "started_at": e.started_at,
        "finished_at": e.finished_at,
        "duration_s": e.duration_s,
        "lateness_s": e.lateness_s,
        "error_type": e.error_type,
        "error_message": e.error_message,
        "traceback": e.traceback,
        "instance": e.instance,
        "origin": e.origin.value,
        "coalesced": e.coalesced,
        "trace_id": e.trace_id,
        "span_id": e.span_id,
        "tags": dict(e.tags) if e.tags else None,
    }


def from_row(row: Mapping[str, Any]) -> Execution:
    tags = row["tags"]
    return Execution(
        run_id=row["run_id"],
        job_id=row["job_id"],
        job_name=row["job_name"],
        status=Status(row["status"]),
        scheduled_at=row["scheduled_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_s=row["duration_s"],
        lateness_s=row["lateness_s"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        traceback=row["traceback"],
        instance=row["instance"],
        origin=Origin(row["origin"]),
        coalesced=row["coalesced"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        tags=MappingProxyType(dict(tags)) if tags else MappingProxyType({}),
    )


COLUMNS: tuple[str, ...] = (
    "run_id",
    "job_id",
    "job_name",
    "status",
    "scheduled_at",
    "started_at",
    "finished_at",
    "duration_s",
    "lateness_s",
    "error_type",
    "error_message",
    "traceback",
    "instance",
    "origin",
    "coalesced",
    "trace_id",
    "span_id",
    "tags",
)


def _sqlite_time(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME storage format, in UTC."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


def tuple_maker(dialect: str) -> Callable[[Execution], tuple[Any, ...]]:
    """A function turning a record into a parameter tuple (in :data:`COLUMNS` order) for the driver.

    The write path hands these straight to the DB-API driver: SQLAlchemy's per-parameter
    processing cost ~25 µs a row, three times the insert itself (``bench/ingest.py``).
    """
    when = _sqlite_time if dialect == "sqlite" else _utc

    def make(e: Execution) -> tuple[Any, ...]:
        return (
            e.run_id,
            e.job_id,
            e.job_name,
            e.status.value,
            when(e.scheduled_at),
            when(e.started_at),
            when(e.finished_at),
            e.duration_s,
            e.lateness_s,
            e.error_type,
            e.error_message,
            e.traceback,
            e.instance,
            e.origin.value,
            e.coalesced,
            e.trace_id,
            e.span_id,
            json.dumps(dict(e.tags)) if e.tags else None,
        )

    return make
