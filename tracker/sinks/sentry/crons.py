"""Sentry Crons: a check-in per scheduled run, the monitor's schedule from the job's trigger.

:class:`SentryCronsSink` runs on its own thread, off the job's path: for every scheduled
run of every job (decorated or not) it sends ``ok`` or ``error`` when the run ends, with
its duration, the run id as the check-in id and a ``monitor_config`` upserting the monitor
(slug from the job id). A run still in progress after the hub's announce interval (50 ms
by default) sends ``in_progress`` first, so Sentry can time it; a shorter one sends just
the final check-in, which Sentry accepts on its own. Manual and direct runs,
missed and skipped fire times send nothing: Sentry itself notices a missed check-in.

:func:`monitor_config` turns an APScheduler 3 ``CronTrigger`` or ``IntervalTrigger`` into
Sentry's schedule. What Sentry cannot represent — intervals that are not whole minutes
(or shorter than one), cron expressions with seconds, years, ISO weeks, ``last``/``2nd
fri`` days, day *and* weekday restrictions together (cron ORs them, APScheduler ANDs
them), combined triggers, a cron trigger whose time zone has no IANA name (a fixed offset
that is not whole hours, a zone read from a file) — raises :class:`UnsupportedSchedule`;
the sink then skips the job with one warning, rather than sending a monitor that would
raise false alarms. A cron monitor always carries its zone (a fixed whole-hour offset as
its ``Etc/GMT`` name): without it Sentry reads the crontab in UTC. One-shot (``date``)
jobs are skipped silently.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import zoneinfo
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any

from sentry_sdk.crons import capture_checkin

from ..._hub import Hub
from ..._record import Execution, JobState, Origin, Status
from ..._sink import BaseSink, TrackerEvent
from .scope import sentry_enabled

__all__ = ["SentryCronsSink", "UnsupportedSchedule", "monitor_config", "monitor_slug"]

logger = logging.getLogger("tracker.sentry")

_CHECKIN_STATUS = {
    Status.RUNNING: "in_progress",
    Status.SUCCEEDED: "ok",
    Status.FAILED: "error",
    Status.TIMED_OUT: "error",
    Status.INTERRUPTED: "error",
}
_UNITS = (("week", 604_800), ("day", 86_400), ("hour", 3_600), ("minute", 60))
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # APScheduler: mon = 0
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MAX = {"minute": 59, "hour": 23, "day": 31, "month": 12}
_PART = re.compile(r"^(?:\*|(?P<first>\d+)(?:-(?P<last>\d+))?)(?:/(?P<step>\d+))?$")


class UnsupportedSchedule(ValueError):
    """The trigger's schedule has no faithful Sentry Crons equivalent."""


def monitor_slug(job_id: str) -> str:
    """The Sentry monitor slug of a job: lower case, ``[a-z0-9_-]``, at most 50 characters."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", job_id.lower()).strip("-")
    return slug[:50] or "job"


@functools.cache
def _zone_names() -> frozenset[str]:
    """The IANA zone names this system's time zone database knows (read once: ~50 ms)."""
    return frozenset(zoneinfo.available_timezones())


def _fixed_offset(tz: tzinfo) -> timedelta | None:
    """The UTC offset of a time zone that has only one (``datetime.timezone``, ``UTC+02:00``)."""
    try:
        offset = tz.utcoffset(None)
        if offset is None:
            return None
        probes = (datetime(2001, 1, 15, 12), datetime(2001, 7, 15, 12))
        return offset if all(tz.utcoffset(p) == offset for p in probes) else None
    except Exception:
        return None


def _offset_zone(offset: timedelta) -> str:
    """The IANA name of a fixed UTC offset: ``UTC``, or ``Etc/GMT-2`` for UTC+02:00 (POSIX
    signs, inverted). Only whole hours from -12 to +14 have one."""
    if not offset:
        return "UTC"
    hours, rest = divmod(offset, timedelta(hours=1))
    if rest or not -12 <= hours <= 14:
        raise UnsupportedSchedule(
            f"the trigger's time zone is a fixed offset of {_describe_offset(offset)}, which has "
            "no IANA name for Sentry (give the trigger a named zone, e.g. 'Asia/Kolkata')"
        )
    return f"Etc/GMT{-hours:+d}"


def _describe_offset(offset: timedelta) -> str:
    sign, size = ("-", -offset) if offset < timedelta(0) else ("+", offset)
    minutes = int(size.total_seconds() // 60)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _timezone_name(trigger: Any) -> str:
    """The IANA name of the zone the trigger fires in (Sentry reads the crontab in it).

    Raises :class:`UnsupportedSchedule` when it has none: without its zone, Sentry would read
    the crontab in UTC and expect check-ins at the wrong times.
    """
    tz = getattr(trigger, "timezone", None)
    if not isinstance(tz, tzinfo):
        raise UnsupportedSchedule("the trigger has no time zone")
    name = getattr(tz, "key", None) or getattr(tz, "zone", None) or str(tz)
    if name in _zone_names() or name == "UTC":
        return str(name)
    offset = _fixed_offset(tz)
    if offset is not None:
        return _offset_zone(offset)
    raise UnsupportedSchedule(
        f"the trigger's time zone {name!r} is not an IANA zone name "
        "(give the trigger a named zone, e.g. 'Europe/Berlin')"
    )


def _standard_field(name: str, text: str) -> str:
    """An APScheduler cron field (minute, hour, day, month) in standard cron syntax."""
    parts = []
    for part in text.split(","):
        part = part.strip().lower()
        if name == "month" and part[:3] in _MONTHS and re.fullmatch(r"[a-z]{3}(-[a-z]{3})?", part):
            parts.append(part)
            continue
        match = _PART.match(part)
        if match is None:
            raise UnsupportedSchedule(f"{name}={text!r} has no standard cron form")
        if match["first"] is not None and match["last"] is None and match["step"]:
            part = f"{match['first']}-{_MAX[name]}/{match['step']}"  # "5/10" means 5-max/10
        parts.append(part)
    return ",".join(parts)


def _standard_weekdays(text: str) -> str:
    """APScheduler's day_of_week (mon = 0) as standard cron weekdays (sun = 0)."""
    days: set[int] = set()
    for part in text.split(","):
        part = part.strip().lower()
        names = part.split("-")
        if all(n in _WEEKDAYS for n in names) and len(names) <= 2:
            first, last = _WEEKDAYS.index(names[0]), _WEEKDAYS.index(names[-1])
            step = 1
        else:
            match = _PART.match(part)
            if match is None:
                raise UnsupportedSchedule(f"day_of_week={text!r} has no standard cron form")
            first = int(match["first"]) if match["first"] is not None else 0
            last = (
                int(match["last"])
                if match["last"] is not None
                else (6 if match["first"] is None or match["step"] else first)
            )
            step = int(match["step"] or 1)
        if not 0 <= first <= last <= 6:
            raise UnsupportedSchedule(f"day_of_week={text!r} is not a range of weekdays")
        days.update(range(first, last + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(str((day + 1) % 7) for day in sorted(days, key=lambda d: (d + 1) % 7))


def _crontab(trigger: Any) -> str:
    fields = {field.name: field for field in trigger.fields}
    for name, default in (("second", "0"), ("year", "*"), ("week", "*")):
        if str(fields[name]) != default:
            what = "seconds" if name == "second" else name
            raise UnsupportedSchedule(
                f"a cron schedule with {what} ({name}={fields[name]}) has no 5-field cron form"
            )
    day, weekday = str(fields["day"]), str(fields["day_of_week"])
    if day != "*" and weekday != "*":
        raise UnsupportedSchedule(
            f"day={day!r} and day_of_week={weekday!r} together "
            "(cron would run on either, APScheduler on both)"
        )
    return " ".join(
        (
            _standard_field("minute", str(fields["minute"])),
            _standard_field("hour", str(fields["hour"])),
            _standard_field("day", day),
            _standard_field("month", str(fields["month"])),
            _standard_weekdays(weekday),
        )
    )


def monitor_config(trigger: Any, max_runtime: float | None = None) -> dict[str, Any] | None:
    """Sentry's ``monitor_config`` for an APScheduler 3 trigger; ``None`` for one-shot jobs.

    Raises :class:`UnsupportedSchedule` when Sentry cannot represent the schedule.
    """
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    config: dict[str, Any]
    if isinstance(trigger, DateTrigger):
        return None
    if isinstance(trigger, IntervalTrigger):
        seconds = trigger.interval.total_seconds()
        if seconds < 60 or seconds % 60:
            raise UnsupportedSchedule(
                f"an interval of {seconds:g} s is not a whole number of "
                "minutes (Sentry Crons counts in minutes)"
            )
        unit, size = next((u, s) for u, s in _UNITS if seconds % s == 0)
        config = {"schedule": {"type": "interval", "value": int(seconds // size), "unit": unit}}
    elif isinstance(trigger, CronTrigger):
        schedule = {"type": "crontab", "value": _crontab(trigger)}
        config = {"schedule": schedule, "timezone": _timezone_name(trigger)}
    else:
        raise UnsupportedSchedule(f"{type(trigger).__name__} schedules have no Sentry form")
    if max_runtime:
        config["max_runtime"] = max(1, math.ceil(max_runtime / 60))
    return config


def _known_job(hub: Hub, job_id: str) -> Any:
    from ...integrations.apscheduler.resolve import instrumented

    for inst in list(instrumented.values()):
        if inst.hub is hub:
            known = inst.registry.get(job_id)
            if known is not None:
                return known
    return None


class SentryCronsSink(BaseSink):
    """Check-ins for every scheduled run of the jobs of ``hub``'s schedulers."""

    name = "sentry-crons"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._configs: dict[str, dict[str, Any] | None] = {}
        self._warned: set[str] = set()

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        active = sentry_enabled()
        for event in events:
            if type(event) is JobState:
                self._configs.pop(event.job_id, None)  # its trigger may have changed
                continue
            if not active or type(event) is not Execution or event.origin is not Origin.SCHEDULED:
                continue
            status = _CHECKIN_STATUS.get(event.status)
            if status is None:
                continue
            config = self._config(event.job_id)
            if config is None:
                continue
            capture_checkin(
                monitor_slug=monitor_slug(event.job_id),
                check_in_id=event.run_id.replace("-", ""),
                status=status,
                duration=event.duration_s if status != "in_progress" else None,
                monitor_config=config,  # type: ignore[arg-type]
            )

    def _config(self, job_id: str) -> dict[str, Any] | None:
        if job_id in self._configs:
            return self._configs[job_id]
        known = _known_job(self.hub, job_id)
        if known is None:
            return None
        try:
            config = monitor_config(known.trigger, known.max_runtime)
        except UnsupportedSchedule as exc:
            config = None
            if job_id not in self._warned:
                self._warned.add(job_id)
                logger.warning("Sentry Crons: no monitor for job %r: %s", job_id, exc)
        self._configs[job_id] = config
        return config
