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

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_VALID_STATUSES = ", ".join(s.value for s in Status)


def parse_duration(text: str, name: str = "duration") -> timedelta:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"30d"``, ``"2w"`` or combinations like ``"1h30m"``."""
    compact = text.strip().lower().replace(" ", "")
    pos = 0
    total = timedelta()
    for match in _DURATION.finditer(compact):
        if match.start() != pos:
            break
        total += timedelta(**{_UNITS[match["unit"]]: float(match["n"])})
        pos = match.end()
    if not compact or pos != len(compact):
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
        try:
            return (now or datetime.now(UTC)) - parse_duration(value, name)
        except ValueError:
            pass
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
    return parsed.astimezone(UTC)


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
    problem = "cursor is not valid: pass the next_cursor value of a previous page unchanged"
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError(problem) from None
    if (
        not isinstance(values, list)
        or len(values) != len(types)
        or not all(
            isinstance(v, t) and not isinstance(v, bool) for v, t in zip(values, types, strict=True)
        )
    ):
        raise ValueError(problem)
    return values


def execution_cursor(scheduled_at: datetime, run_id: str) -> str:
    """The cursor for the page after the run at ``(scheduled_at, run_id)``."""
    return encode_cursor(scheduled_at.astimezone(UTC).isoformat(), run_id)


def decode_execution_cursor(cursor: str) -> tuple[datetime, str]:
    """``(scheduled_at, run_id)`` from a cursor made by :func:`execution_cursor`."""
    at, run_id = decode_cursor(cursor, (str, str))
    try:
        moment = datetime.fromisoformat(str(at))
    except ValueError:
        raise ValueError(
            "cursor is not valid: pass the next_cursor value of a previous page unchanged"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(
            "cursor is not valid: pass the next_cursor value of a previous page unchanged"
        )
    return moment, str(run_id)
