"""Records as plain tuples: the cheap form of an :class:`~tracker.Execution` for sinks that
only pass records on (the database writer process pickles them to its child).

A plain record has the fields of :class:`~tracker.Execution`, in the same order, with:

* ``status`` and ``origin`` as their text values;
* ``tags`` as a ``dict``, or ``None`` when there are none;
* each time as its Unix ``timestamp()`` float where that comes back to the same
  microsecond (years 1834 to 2106), else as an aware ``datetime``.

Its type is exactly ``tuple`` (an ``Execution`` is a ``tuple`` subclass): sinks tell the two
apart with :func:`is_plain`. The hub makes them straight from finished runs, without the three
``datetime`` objects and the record a run would otherwise cost on its thread, for sinks that
declare ``plain_records = True`` — and only while every sink does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from ._record import _EMPTY_TAGS, Execution, Origin, Status

PlainRecord = tuple[Any, ...]
"""An :class:`~tracker.Execution` as plain values (see the module's description)."""

_new_execution = Execution._make
_AT_STATUS, _AT_ORIGIN, _AT_TAGS = (
    Execution._fields.index(f) for f in ("status", "origin", "tags")
)
_AT_TIMES = tuple(Execution._fields.index(f) for f in ("scheduled_at", "started_at", "finished_at"))
EXACT_SECONDS = 2.0**32
"""Below this many seconds from 1970 (years 1834 to 2106), a time's ``timestamp()`` float
comes back to the same microsecond: its precision is finer than half a microsecond."""


def is_plain(event: object) -> bool:
    """Whether ``event`` is a :data:`PlainRecord` (not an ``Execution`` or another event)."""
    return type(event) is tuple


def to_plain(e: Execution) -> PlainRecord:
    """``e`` as a plain record (pickling a float costs a fifth of a ``datetime``)."""
    values: list[Any] = list(e)
    values[_AT_STATUS] = e.status._value_
    values[_AT_ORIGIN] = e.origin._value_
    values[_AT_TAGS] = dict(e.tags) if e.tags else None
    for at in _AT_TIMES:
        values[at] = plain_time(values[at])
    return tuple(values)


def plain_time(moment: datetime | None) -> datetime | float | None:
    """``moment`` as its timestamp where that is exact (else itself)."""
    if moment is None or moment.tzinfo is None:
        return moment
    seconds = moment.timestamp()
    return seconds if -EXACT_SECONDS < seconds < EXACT_SECONDS else moment


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
