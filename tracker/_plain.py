"""Records as plain tuples: for the database writer process (its sink pickles them to its
child), and run rows, for the sinks that need no record of a finished run (the database and
metrics sinks).

A **plain record** (:func:`to_plain`) has the fields of :class:`~tracker.Execution`, in the same
order, with ``status`` and ``origin`` as their text values, ``tags`` as a ``dict`` (``None``
when there are none), and each time as its Unix ``timestamp()`` float where that comes back to
the same microsecond (years 1834 to 2106), else as an aware ``datetime`` whose ``tzinfo`` is a
builtin ``timezone`` (:func:`portable_time`).

A **run row** (:data:`RunRow`) is what the hub knows of a finished run, before any of it is
worked out: its id if it has one, the fire time as seconds, the start as the clock read it, the
duration. The record (times to the microsecond, lateness, the end, the id) is made from it by
:func:`from_run_row`, where one is needed; the database sink makes its row's parameters from the
run row itself (giving it an id if it has none), the metrics sink counts it as its record would
count (:func:`run_row_timing`). The hub sends run rows, not records, to sinks that declare
``run_rows = True``, and only while every sink does — the defaults, database and metrics, do:
the run's thread and the hub's then make no ``datetime``, no id and no record
(``bench/overhead.py``).

Both are exactly ``tuple`` (every event the hub sends is a ``tuple`` subclass):
:func:`is_plain` tells them from the rest; their lengths tell them apart. Both hold only
builtins: text that came as a ``str`` subclass (a job id that is an ``enum.StrEnum`` member, a
class of the service's own) is sent as plain ``str`` (the writer process could not unpickle
the service's classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from ._ids import derived_run_id
from ._record import _EMPTY_TAGS, Execution, Origin, Status

PlainRecord = tuple[Any, ...]
"""An :class:`~tracker.Execution` as plain values (see the module's description)."""

_new_execution = Execution._make
_AT_STATUS, _AT_ORIGIN, _AT_TAGS = (
    Execution._fields.index(f) for f in ("status", "origin", "tags")
)
_AT_TIMES = tuple(Execution._fields.index(f) for f in ("scheduled_at", "started_at", "finished_at"))
_AT_TEXTS = tuple(
    Execution._fields.index(f)
    for f in (
        "run_id",
        "job_id",
        "job_name",
        "error_type",
        "error_message",
        "traceback",
        "instance",
        "trace_id",
        "span_id",
    )
)
_AT_JOB_ID, _AT_JOB_NAME, _AT_INSTANCE, _AT_MESSAGE = (
    Execution._fields.index(f) for f in ("job_id", "job_name", "instance", "error_message")
)
AT_STATUS = _AT_STATUS
"""Where a plain record and a run row alike hold the run's status (as text); both hold the
run's id first."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EXACT_SECONDS = 2.0**32
"""Below this many seconds from 1970 (years 1834 to 2106), a time's ``timestamp()`` float
comes back to the same microsecond: its precision is finer than half a microsecond."""


RunRow = tuple[Any, ...]
"""A finished run as the hub knows it: ``(run_id or None, job_id, job_name, status, scheduled,
wall, duration, error_type, error_message, traceback, instance, origin, trace_id, span_id,
tags)``. ``status`` and ``origin`` as text; ``scheduled`` the fire time as seconds since 1970
where that is exact (else an aware ``datetime`` with a builtin ``timezone``; ``None`` for a
direct call: its start); ``wall`` the start as ``time.time()`` read it; ``duration`` in seconds;
``tags`` a ``dict`` or ``None``."""

RUN_ROW_LENGTH = 15


def is_plain(event: object) -> bool:
    """Whether ``event`` is a plain record or a run row (not an ``Execution`` or another event:
    they are ``tuple`` subclasses)."""
    return type(event) is tuple


def from_run_row(row: RunRow, salt: int, batch: int, index: int) -> Execution:
    """The record of the run ``row`` describes, made as the hub makes it (the start to the
    microsecond as ``datetime.fromtimestamp`` rounds it, the end as the start plus the
    duration, each rounded to the microsecond). A row without an id gets
    :func:`~tracker._ids.derived_run_id` of its place (``batch``, ``index``) in what the writer
    with ``salt`` was sent: the same id whenever it is made again."""
    (
        run_id,
        job_id,
        job_name,
        status,
        scheduled,
        wall,
        duration,
        error_type,
        error_message,
        traceback,
        instance,
        origin,
        trace_id,
        span_id,
        tags,
    ) = row
    started_us = _microseconds(wall)
    started = _EPOCH + timedelta(microseconds=started_us)
    if run_id is None:
        run_id = derived_run_id(started_us // 1000, salt, batch, index)
    if scheduled is None:
        scheduled_at = started
        lateness = 0.0
    elif isinstance(scheduled, float):
        scheduled_us = _microseconds(scheduled)
        scheduled_at = _EPOCH + timedelta(microseconds=scheduled_us)
        lateness = (started_us - scheduled_us) / 1e6
    else:
        scheduled_at = scheduled.astimezone(UTC)
        lateness = (started - scheduled_at).total_seconds()
    return _new_execution(
        (
            run_id,
            job_id,
            job_name,
            Status(status),
            scheduled_at,
            started,
            started + timedelta(seconds=duration),
            duration,
            lateness,
            error_type,
            error_message,
            traceback,
            instance,
            Origin(origin),
            0,
            trace_id,
            span_id,
            MappingProxyType(tags) if tags else _EMPTY_TAGS,
        )
    )


def run_row_instants(row: RunRow) -> tuple[int, int, int] | None:
    """The fire time, start and end of the run ``row`` describes, in microseconds since 1970,
    as its record (:func:`from_run_row`) has them; ``None`` when its fire time is a
    ``datetime`` (far from 1970: make the record). :func:`_microseconds` of each, spelled out:
    its calls were a third of the cost, on the writer's path."""
    scheduled, wall, duration = row[4], row[5], row[6]
    whole = int(wall)
    started = whole * 1_000_000 + round((wall - whole) * 1e6)
    whole = int(duration)
    finished = started + whole * 1_000_000 + round((duration - whole) * 1e6)
    if scheduled is None:
        return started, started, finished
    if type(scheduled) is not float:
        return None
    whole = int(scheduled)
    return whole * 1_000_000 + round((scheduled - whole) * 1e6), started, finished


def run_row_timing(row: RunRow) -> tuple[float, float]:
    """The lateness of the run ``row`` describes and its end (seconds since 1970), as its
    record (:func:`from_run_row`) has them, without making it."""
    instants = run_row_instants(row)
    if instants is None:
        record = from_run_row(row, 0, 0, 0)
        return record.lateness_s or 0.0, record.finished_at.timestamp()  # type: ignore[union-attr]
    due, started, finished = instants
    return (started - due) / 1e6, finished / 1e6


def _microseconds(seconds: float) -> int:
    """``seconds`` since 1970 in whole microseconds, rounded as ``datetime.fromtimestamp``
    rounds them (half to even, on the exact fraction): the same instant either way."""
    whole = int(seconds)
    return whole * 1_000_000 + round((seconds - whole) * 1e6)


def sent_row(row: tuple[Any, ...], salt: int, batch: int, index: int) -> Execution | RunRow:
    """What the writer process writes of a row it was sent: a run row as it is, given the id
    :func:`from_run_row` gives it if it has none (its record is not made: the database sink
    makes its parameters from the run row); a plain record as its record."""
    if len(row) == RUN_ROW_LENGTH:
        if row[0] is None:
            ms = _microseconds(row[5]) // 1000
            return (derived_run_id(ms, salt, batch, index), *row[1:])
        return row
    return from_plain(row)


def from_sent(row: tuple[Any, ...], salt: int, batch: int, index: int) -> Execution:
    """The record a plain record or a run row stands for (see :func:`from_run_row`)."""
    if len(row) == RUN_ROW_LENGTH:
        return from_run_row(row, salt, batch, index)
    return from_plain(row)


def to_plain(e: Execution) -> PlainRecord:
    """``e`` as a plain record (pickling a float costs a fifth of a ``datetime``)."""
    values: list[Any] = list(e)
    values[_AT_STATUS] = e.status._value_
    values[_AT_ORIGIN] = e.origin._value_
    values[_AT_TAGS] = _plain_tags(e.tags) if e.tags else None
    for at in _AT_TIMES:
        values[at] = plain_time(values[at])
    message = values[_AT_MESSAGE]
    if (  # the text a user's code may give as a str subclass (checked at once: per record)
        type(values[_AT_JOB_ID]) is not str
        or type(values[_AT_JOB_NAME]) is not str
        or type(values[_AT_INSTANCE]) is not str
        or (message is not None and type(message) is not str)
    ):
        for at in _AT_TEXTS:
            values[at] = plain_value(values[at])
    return tuple(values)


def _plain_tags(tags: Mapping[str, str]) -> dict[str, str]:
    plain = dict(tags)
    for key, value in plain.items():
        if type(key) is not str or type(value) is not str:
            return plain_value(plain)  # type: ignore[no-any-return]
    return plain


def plain_value(value: Any) -> Any:
    """``value`` with its text as plain ``str``: a ``str`` subclass as the ``str`` it holds,
    a mapping's keys and values too (as a ``dict``). Anything else as it is."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Mapping):
        return {plain_value(k): plain_value(v) for k, v in value.items()}
    return value


def plain_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A plain record or run row with every value :func:`plain_value`."""
    return tuple(plain_value(v) for v in row)


def plain_time(moment: datetime | None) -> datetime | float | None:
    """``moment`` as its timestamp where that is exact (else as a :func:`portable_time`)."""
    if moment is None or moment.tzinfo is None:
        return moment
    seconds = moment.timestamp()
    return seconds if -EXACT_SECONDS < seconds < EXACT_SECONDS else portable_time(moment)


def portable_time(moment: datetime) -> datetime:
    """``moment`` (aware) with its offset as a builtin ``timezone``: the same instant, whatever
    its ``tzinfo`` was (a class of the service's own, which the writer process could not
    unpickle). Kept as it is when it has a ``timezone`` already (``UTC`` too)."""
    tzinfo = moment.tzinfo
    if tzinfo is None or type(tzinfo) is timezone:
        return moment
    offset = moment.utcoffset()
    return moment.replace(tzinfo=None if offset is None else timezone(offset))


def from_plain(row: PlainRecord) -> Execution:
    """The record :func:`to_plain` (or the hub) made ``row`` from (times as UTC datetimes)."""
    values = list(row)
    values[_AT_STATUS] = Status(values[_AT_STATUS])
    values[_AT_ORIGIN] = Origin(values[_AT_ORIGIN])
    tags = values[_AT_TAGS]
    values[_AT_TAGS] = MappingProxyType(tags) if tags else _EMPTY_TAGS
    for at in _AT_TIMES:
        moment = values[at]
        if isinstance(moment, float):
            values[at] = datetime.fromtimestamp(moment, UTC)
    return _new_execution(values)
