"""Parsing what people type as filters: times, durations, statuses, and opaque page cursors.

Shared by the HTTP API and the ``tracker`` command line; every error is a
:class:`ValueError` whose message can be shown as is.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, date, datetime, timedelta

from ..._record import Status
from ...sinks.storable import storable_text

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_VALID_STATUSES = ", ".join(s.value for s in Status)
_BAD_CURSOR = "cursor is not valid: pass the next_cursor value of a previous page unchanged"
ID_MIN, ID_MAX = -(2**63), 2**63 - 1
"""The ids a cursor may hold: those of a signed 64-bit column (``BIGINT``)."""


def _age(text: str, name: str) -> timedelta | None:
    """The length ``text`` spells (``"1h30m"``), ``None`` if it is not a duration at all;
    a :class:`ValueError` if it is one but longer than a :class:`~datetime.timedelta` holds."""
    compact = text.strip().lower().replace(" ", "")
    pos = 0
    parts: list[tuple[str, float]] = []
    for match in _DURATION.finditer(compact):
        if match.start() != pos:
            break
        parts.append((_UNITS[match["unit"]], float(match["n"])))
        pos = match.end()
    if not compact or pos != len(compact):
        return None
    try:
        return sum((timedelta(**{unit: n}) for unit, n in parts), timedelta())
    except OverflowError:
        raise ValueError(
            f"{name} {text!r} is too long: at most {timedelta.max.days} days"
        ) from None


def parse_duration(text: str, name: str = "duration") -> timedelta:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"30d"``, ``"2w"`` or combinations like ``"1h30m"``."""
    total = _age(text, name)
    if total is None:
        raise ValueError(
            f"{name} {text!r} is not a duration: use a number and a unit, "
            "like 90s, 15m, 12h, 30d or 2w"
        )
    return total


def parse_time(text: str, name: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or datetime (naive means UTC), or a duration ago such as ``"2h"``.

    Returns a timezone-aware UTC datetime.
    """
    value = text.strip()
    if not value:
        raise ValueError(f"{name} is empty")
    if value[0].isdigit() and value[-1].lower() in _UNITS and not value[-1].isdigit():
        age = _age(value, name)
        if age is not None:  # else not an age after all: perhaps ISO 8601
            try:
                return (now or datetime.now(UTC)) - age
            except OverflowError:
                raise ValueError(f"{name} {text!r} reaches back before the year 1") from None
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        try:
            day = date.fromisoformat(iso)
        except ValueError:
            raise ValueError(
                f"{name} {text!r} is not a time: use ISO 8601 (2024-06-01, "
                "2024-06-01T12:00:00Z, 2024-06-01T14:00:00+02:00) or an age like 2h or 7d"
            ) from None
        parsed = datetime(day.year, day.month, day.day)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{name} {text!r} is out of range: in UTC it falls outside the years 1 to 9999"
        ) from None


def parse_statuses(text: str) -> list[Status]:
    """One status or a comma-separated list (``failed,timed_out``)."""
    result: list[Status] = []
    for part in text.split(","):
        value = part.strip().lower()
        try:
            result.append(Status(value))
        except ValueError:
            raise ValueError(
                f"unknown status {part.strip()!r}; valid statuses: {_VALID_STATUSES}"
            ) from None
    return result


def encode_cursor(*values: str | int) -> str:
    """An opaque cursor for the position after ``values``."""
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, types: tuple[type, ...]) -> list[str | int]:
    """The values inside ``cursor``, checked against ``types``; ``ValueError`` if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser goes ("[[[[..."), never ours.
        raise ValueError(_BAD_CURSOR) from None
    if (
        not isinstance(values, list)
        or len(values) != len(types)
        or not all(
            isinstance(v, t) and not isinstance(v, bool) for v, t in zip(values, types, strict=True)
        )
    ):
        raise ValueError(_BAD_CURSOR)
    return values


def decode_id_cursor(cursor: str) -> int:
    """The id inside a cursor made by ``encode_cursor(id)``; ``ValueError`` unless it is one
    that a ``BIGINT`` column holds (the database would refuse the query, not answer it)."""
    (value,) = decode_cursor(cursor, (int,))
    if not ID_MIN <= int(value) <= ID_MAX:
        raise ValueError(_BAD_CURSOR)
    return int(value)


def execution_cursor(scheduled_at: datetime, run_id: str) -> str:
    """The cursor for the page after the run at ``(scheduled_at, run_id)``."""
    return encode_cursor(scheduled_at.astimezone(UTC).isoformat(), run_id)


def decode_execution_cursor(cursor: str) -> tuple[datetime, str]:
    """``(scheduled_at, run_id)`` from a cursor made by :func:`execution_cursor`.

    Ours hold a time that has a UTC form and a run id as the database stores it (no NUL
    character, no lone surrogate): anything else is a :class:`ValueError`."""
    at, run_id = decode_cursor(cursor, (str, str))
    try:
        moment = datetime.fromisoformat(str(at))
        if moment.tzinfo is None:
            raise ValueError(_BAD_CURSOR)
        moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(_BAD_CURSOR) from None
    if storable_text(str(run_id)) != run_id:
        raise ValueError(_BAD_CURSOR)
    return moment, str(run_id)
