"""Converting between :class:`~tracker.Execution` records and table rows (and the plain
tuples a writer process is sent: :mod:`tracker._plain`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from ..._plain import RunRow, from_plain, from_run_row, run_row_instants, to_plain
from ..._record import Execution, Origin, Status
from ..storable import ID_LENGTH, storable_text

__all__ = [
    "COLUMNS",
    "from_plain",
    "from_row",
    "record_of",
    "run_row_maker",
    "storable",
    "to_plain",
    "to_row",
    "tuple_maker",
]


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


_second: tuple[tuple[int, ...], str] = ((), "")
"""The last second formatted, with its text: swapped whole, so threads can share it."""


def _sqlite_time(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME storage format (``YYYY-MM-DD HH:MM:SS.ffffff``), in UTC.

    A row's three times mostly fall in one second, and so do consecutive rows: the text of
    the second is kept, and only the microseconds are formatted (half the cost of
    ``isoformat``).
    """
    global _second
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    key = (value.year, value.month, value.day, value.hour, value.minute, value.second)
    cached = _second
    if cached[0] != key:
        cached = _second = (key, value.isoformat(" ", "seconds")[:19])
    return f"{cached[1]}.{value.microsecond:06d}"


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


def stored_job_id(job_id: str) -> str:
    """The ``job_id`` (or ``job_name``) the history holds for a job of this id (or name): the
    same, unless it is past its column's 255 characters or holds a NUL character or a lone
    surrogate, then as :func:`~tracker.sinks.storable.storable_text` makes it, on every
    backend (PostgreSQL refuses it as it is, SQLite would keep it whole; neither driver can
    send a lone surrogate). Lookups by the job's own id therefore find its rows."""
    return storable_text(job_id, ID_LENGTH)


def tuple_maker(dialect: str) -> Callable[[Execution], tuple[Any, ...]]:
    """A function turning a record into a parameter tuple (in :data:`COLUMNS` order) for the driver.

    The write path hands these straight to the DB-API driver: SQLAlchemy's per-parameter
    processing cost ~25 µs a row, three times the insert itself (``bench/ingest.py``).
    ``status`` and ``origin`` are ``StrEnum`` members, which both drivers bind as text.
    """
    when = _sqlite_time if dialect == "sqlite" else _utc

    def make(e: Execution) -> tuple[Any, ...]:
        (
            run_id,
            job_id,
            job_name,
            status,
            scheduled_at,
            started_at,
            finished_at,
            duration_s,
            lateness_s,
            error_type,
            error_message,
            traceback,
            instance,
            origin,
            coalesced,
            trace_id,
            span_id,
            tags,
        ) = e
        return (
            run_id,
            stored_job_id(job_id),
            stored_job_id(job_name),
            str(status),
            when(scheduled_at),
            when(started_at),
            when(finished_at),
            duration_s,
            lateness_s,
            error_type,
            error_message,
            traceback,
            instance,
            str(origin),
            coalesced,
            trace_id,
            span_id,
            json.dumps(dict(tags)) if tags else None,
        )

    return make


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_second_text: tuple[int, str] = (-1, "")
"""The last second (since 1970) formatted for SQLite, with its text up to the fraction:
swapped whole, so threads can share it."""


def _sqlite_text(us: int) -> str:
    """``us`` microseconds since 1970 as :func:`_sqlite_time` writes that instant (the text of
    the second kept, as there; ``str`` of the fraction plus a million, cut, is half the cost of
    a ``:06d`` format)."""
    global _second_text
    second = us // 1_000_000
    cached = _second_text
    if cached[0] != second:
        moment = _EPOCH + timedelta(seconds=second)
        cached = _second_text = (second, moment.isoformat(" ", "seconds")[:19] + ".")
    return cached[1] + str(1_000_000 + us - second * 1_000_000)[1:]


def _sqlite_times(row: RunRow) -> tuple[str, str, str, float] | None:
    """A run row's fire time, start and end as SQLite's text, and its lateness (``None``: a fire
    time far from 1970)."""
    instants = run_row_instants(row)
    if instants is None:
        return None
    due, started, finished = instants
    return _sqlite_text(due), _sqlite_text(started), _sqlite_text(finished), (started - due) / 1e6


def _datetime_times(row: RunRow) -> tuple[datetime, datetime, datetime, float] | None:
    """A run row's fire time, start and end as UTC ``datetime`` values (psycopg's), and its
    lateness (``None``: a fire time far from 1970). ``datetime.fromtimestamp`` rounds as
    :func:`~tracker._plain.from_run_row` does: four C calls, a third cheaper than microseconds."""
    scheduled = row[4]
    if scheduled is not None and type(scheduled) is not float:
        return None
    started = _fromtimestamp(row[5], UTC)
    due = started if scheduled is None else _fromtimestamp(scheduled, UTC)
    return due, started, started + _timedelta(seconds=row[6]), (started - due).total_seconds()


_fromtimestamp = datetime.fromtimestamp
_timedelta = timedelta


def record_of(value: Execution | RunRow) -> Execution:
    """The record of a pending value: a record, or a run row that has its id."""
    if type(value) is tuple:
        return from_run_row(value, 0, 0, 0)
    return value  # type: ignore[return-value]


def run_row_maker(dialect: str) -> Callable[[RunRow], tuple[Any, ...]]:
    """A function turning a run row that has its id (:data:`~tracker._plain.RunRow`) into the
    same parameter tuple :func:`tuple_maker` makes of its record
    (:func:`~tracker._plain.from_run_row`), without making the record: no ``Execution``, no
    ``Status``, and for SQLite no ``datetime`` (``bench/overhead.py``: the record and its tuple
    were a third of what the in-process writer cost the service per run)."""
    make_record = tuple_maker(dialect)
    times_of = _sqlite_times if dialect == "sqlite" else _datetime_times

    def make(row: RunRow) -> tuple[Any, ...]:
        times = times_of(row)
        if times is None:  # a fire time far from 1970, kept as a datetime
            return make_record(from_run_row(row, 0, 0, 0))
        due, started, finished, lateness = times
        tags = row[14]
        return (
            row[0],
            stored_job_id(row[1]),
            stored_job_id(row[2]),
            row[3],
            due,
            started,
            finished,
            row[6],
            lateness,
            row[7],
            row[8],
            row[9],
            row[10],
            row[11],
            0,
            row[12],
            row[13],
            json.dumps(tags) if tags else None,
        )

    return make


def _lengths() -> dict[int, int]:
    from .schema import executions

    lengths = {}
    for column in executions.columns:
        length = getattr(column.type, "length", None)
        if isinstance(length, int):
            lengths[COLUMNS.index(column.name)] = length
    return lengths


_LENGTHS = _lengths()
"""Position in the record → the length its ``VARCHAR`` column holds."""


def storable(e: Execution) -> Execution:
    """``e`` as a database that refused it can take it: text without NUL characters (which
    PostgreSQL's text cannot hold) or lone surrogates (which neither driver can encode), and
    within its column's length (SQLite does not enforce lengths, PostgreSQL does). See
    :func:`~tracker.sinks.storable.storable_text`."""
    values: list[Any] = list(e)
    for at, value in enumerate(values):
        if isinstance(value, str) and not isinstance(value, Status | Origin):
            values[at] = storable_text(value, _LENGTHS.get(at))
    if e.tags:
        values[_AT_TAGS] = MappingProxyType(
            {storable_text(k): storable_text(v) for k, v in e.tags.items()}
        )
    return _new_execution(values)


_new_execution = Execution._make
_AT_TAGS = Execution._fields.index("tags")
