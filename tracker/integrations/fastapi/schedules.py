"""Turning schedule specifications (cron, interval, date; a timezone) into APScheduler 3 triggers.

Every problem is an :class:`~tracker.InvalidScheduleError` whose message names the
field and the value, so an API client can fix its request without guessing.

Cron expressions use **standard crontab numbering**: in the day-of-week field 0 and
7 are Sunday, 1 is Monday (APScheduler 3's own ``from_crontab`` treats 0 as Monday;
we translate, so ``0 9 * * 1-5`` means weekdays as everyone expects). Names are
numbered the same way (``sun-tue`` is Sunday to Tuesday). Five fields are
``minute hour day month day-of-week``; six put ``second`` first.

Every datetime a trigger carries, and its first fire time, must have a UTC form
(years 1 to 9999): APScheduler's job stores convert them, and one that can't be
converted would fail while the job is being changed, leaving it half changed.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ..._exceptions import InvalidScheduleError

FIELDS_5 = ("minute", "hour", "day", "month", "day_of_week")
FIELDS_6 = ("second", *FIELDS_5)
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_TOKEN = re.compile(r"(\*|[a-z0-9]+)(?:-([a-z0-9]+))?(?:/([0-9]+))?")
_INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")


def resolve_timezone(name: str | None, default: tzinfo | None = None) -> tzinfo:
    """The IANA timezone ``name``, or ``default`` (else UTC) when no name is given."""
    if name is None or name == "":
        return default or UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError(
            f"unknown timezone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


def _weekday(value: str, token: str) -> int:
    if value.isdigit():
        day = int(value)
        if day > 7:
            raise InvalidScheduleError(
                f"day-of-week field {token!r}: {day} is not a weekday number "
                "(0-7; 0 and 7 are Sunday)"
            )
        return day
    try:
        return _WEEKDAYS.index(value)
    except ValueError:
        raise InvalidScheduleError(
            f"day-of-week field {token!r}: {value!r} is not a weekday "
            "(use 0-7 or sun, mon, ... sat)"
        ) from None


def crontab_weekdays(field: str) -> str:
    """Translate a crontab day-of-week field (0/7 = Sunday) into APScheduler 3 terms.

    Names are crontab's numbers (``sun`` is 0, ``sat`` 6; APScheduler 3 starts its week on
    Monday, so ``sun-tue`` would be a backwards range there); ``sun`` closing a range that
    starts later in the week is 7, so ``sat-sun`` is the weekend, as ``6-7`` is.
    """
    lowered = field.lower()
    if lowered in ("*", "?"):
        return "*"
    days: set[int] = set()
    for token in lowered.split(","):
        match = _DOW_TOKEN.fullmatch(token)
        if match is None:
            raise InvalidScheduleError(
                f"day-of-week field {token!r}: expected a day, a range like 1-5, or a step like */2"
            )
        start, end, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step == 0:
            raise InvalidScheduleError(f"day-of-week field {token!r}: the step must be at least 1")
        if start == "*":
            if end is not None:
                raise InvalidScheduleError(f"day-of-week field {token!r}: '*' cannot start a range")
            low, high = 0, 6
        else:
            low = _weekday(start, token)
            high = _weekday(end, token) if end is not None else (6 if step_text else low)
            if end == "sun" and low > 0:
                high = 7
            if end is not None and high < low:
                raise InvalidScheduleError(
                    f"day-of-week field {token!r}: the range goes backwards ({low} > {high})"
                )
        days.update(day % 7 for day in range(low, high + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(_WEEKDAYS[day] for day in sorted(days, key=lambda d: (d - 1) % 7))


def cron_trigger(expression: str, timezone: tzinfo, *, now: datetime | None = None) -> CronTrigger:
    """A trigger for a 5-field (``m h dom mon dow``) or 6-field (seconds first) expression."""
    text = " ".join(expression.split())
    if not text:
        raise InvalidScheduleError("the cron expression is empty")
    source = MACROS.get(text.lower(), text)
    if text.startswith("@") and text.lower() not in MACROS:
        raise InvalidScheduleError(
            f"unknown cron macro {text!r}; known: {', '.join(sorted(MACROS))}"
        )
    values = source.split(" ")
    if len(values) not in (5, 6):
        raise InvalidScheduleError(
            f"cron expression {text!r} has {len(values)} field(s); expected 5 "
            "(minute hour day month day-of-week) or 6 (second minute hour day month day-of-week)"
        )
    names = FIELDS_5 if len(values) == 5 else FIELDS_6
    fields: dict[str, str] = dict(zip(names, values, strict=True))
    try:
        fields["day_of_week"] = crontab_weekdays(fields["day_of_week"])
    except InvalidScheduleError as exc:
        raise InvalidScheduleError(f"cron expression {text!r}: {exc}") from None
    if len(values) == 5:
        fields["second"] = "0"
    try:
        trigger = CronTrigger(timezone=timezone, **fields)
    except ValueError:
        raise InvalidScheduleError(_blame(text, fields, names, values, timezone)) from None
    _must_fire(trigger, f"cron expression {text!r}", now)
    return trigger


def _blame(
    text: str, fields: dict[str, str], names: tuple[str, ...], values: list[str], tz: tzinfo
) -> str:
    """Find which field CronTrigger rejected and say so with its own message."""
    for name, raw in zip(names, values, strict=True):
        try:
            CronTrigger(timezone=tz, **{name: fields[name]})
        except ValueError as exc:
            label = name.replace("_", "-")
            return f"cron expression {text!r}: {label} field {raw!r}: {exc}"
    return f"cron expression {text!r} is not valid"


def interval_trigger(
    *,
    weeks: float = 0,
    days: float = 0,
    hours: float = 0,
    minutes: float = 0,
    seconds: float = 0,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    timezone: tzinfo,
    min_interval: float = 1.0,
    now: datetime | None = None,
) -> IntervalTrigger:
    """A trigger firing every ``weeks + days + ... + seconds``, at least ``min_interval`` apart."""
    units: dict[str, float] = {
        "weeks": weeks,
        "days": days,
        "hours": hours,
        "minutes": minutes,
        "seconds": seconds,
    }
    for name, value in units.items():
        if not math.isfinite(value):
            raise InvalidScheduleError(f"interval {name} must be a finite number, got {value}")
        if value < 0:
            raise InvalidScheduleError(f"interval {name} must not be negative, got {value:g}")
    try:
        length = timedelta(**units)
    except OverflowError:
        raise InvalidScheduleError("the interval is too long") from None
    if length.total_seconds() < min_interval:
        given = ", ".join(f"{k}={v:g}" for k, v in units.items() if v) or "nothing"
        raise InvalidScheduleError(
            f"the interval must be at least {min_interval:g} second(s); got {given}"
        )
    start = _localize(start_date, timezone, "start_date")
    end = _localize(end_date, timezone, "end_date")
    if start is not None and end is not None and end <= start:
        raise InvalidScheduleError(
            f"end_date {end.isoformat()} must be after start_date {start.isoformat()}"
        )
    try:
        trigger = IntervalTrigger(
            **{k: v for k, v in units.items() if v},
            start_date=start,
            end_date=end,
            timezone=timezone,
        )
    except (ValueError, OverflowError) as exc:
        raise InvalidScheduleError(f"invalid interval: {exc}") from None
    _must_fire(trigger, "the interval", now)
    return trigger


def date_trigger(run_at: datetime, timezone: tzinfo, *, now: datetime | None = None) -> DateTrigger:
    """A one-shot trigger at ``run_at`` (naive: read in ``timezone``); never in the past."""
    when = _localize(run_at, timezone, "run_at")
    assert when is not None
    current = now or datetime.now(UTC)
    if when <= current:
        raise InvalidScheduleError(
            f"run_at {when.isoformat()} is in the past (now is "
            f"{current.astimezone(when.tzinfo).isoformat(timespec='seconds')})"
        )
    return DateTrigger(run_date=when, timezone=timezone)


def _localize(value: datetime | None, timezone: tzinfo, name: str) -> datetime | None:
    """``value`` (naive: read in ``timezone``), checked to have a UTC form."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone)
    return _in_utc_range(value, name)


def _in_utc_range(value: datetime, name: str) -> datetime:
    """``value``, if it converts to UTC (and so to a timestamp, as the job stores do)."""
    try:
        value.astimezone(UTC)
        value.utctimetuple()
    except OverflowError:
        raise InvalidScheduleError(
            f"{name} {value.isoformat()} is out of range: in UTC it falls outside "
            "the years 1 to 9999"
        ) from None
    return value


def _must_fire(trigger: Any, what: str, now: datetime | None) -> None:
    """Refuse a trigger with no next fire time, or one that can't be stored."""
    current = now or datetime.now(UTC)
    try:
        first = trigger.get_next_fire_time(None, current)
    except (ValueError, OverflowError):
        raise InvalidScheduleError(
            f"{what} first fires out of range: after the year 9999 in UTC or in its timezone"
        ) from None
    if first is None:
        raise InvalidScheduleError(
            f"{what} never fires after {current.isoformat(timespec='seconds')}"
        )
    _in_utc_range(first, f"{what} first fires at")


def describe_trigger(trigger: Any) -> tuple[str, str]:
    """``(type, text)`` of an APScheduler trigger, e.g. ``("cron", "cron[minute='*/5', ...]")``."""
    kind = {CronTrigger: "cron", IntervalTrigger: "interval", DateTrigger: "date"}.get(
        type(trigger), type(trigger).__name__
    )
    return kind, str(trigger)
