"""Fire times that passed while no scheduler ran the job: one ``missed`` row per job, at start.

A service that adds its jobs with ``replace_existing=True`` at every start (as most do) gets
each job's next fire time computed afresh from the time it starts: the fire times that fell
due while it was down (a crash, a long deploy, a host reboot) leave no trace in APScheduler —
no misfire, nothing coalesced. When a scheduler starts, the tracker therefore compares each
job's history with its schedule: the fire times after its last recorded run (as its trigger
computes them from that run) and before the scheduler started, that no row stands for, become
one ``missed`` row whose ``coalesced`` column says how many there were.

Jobs never run before (no history), paused jobs, and jobs whose stored next fire time is
still in the past (APScheduler runs those late, and the coalescing it does is counted
already) are left alone. Fire times due before the latest ``missed`` row was recorded (by a
previous start, or the watchdog), or while the tracker instance that recorded the job's last
row was still alive (its clean stop, or its last heartbeat: a replica still running the job
was seen just now), are not counted. With a fixed ``Tracker(instance=...)`` reused by the
new process, when the old one stopped is not known: nothing is claimed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, and_, case, func, select, type_coerce

from ..._decorator import job_options
from ..._hub import Hub
from ..._record import Status
from ...sinks.database.rows import stored_job_id
from ...sinks.database.schema import executions, instances
from .missed import missed_fire_times
from .registry import without_jitter

logger = logging.getLogger("tracker.apscheduler")

_MOST_COUNTED = 100_000
_STEP = timedelta(microseconds=1)


_Job = tuple[str, str, Any, datetime, dict[str, str]]


def _due_jobs(scheduler: Any) -> list[_Job]:
    """(id, name, trigger, next fire time, tags) of each scheduled job, as it is now."""
    jobs = []
    for job in scheduler.get_jobs():
        next_run = getattr(job, "next_run_time", None)
        if next_run is None or "#manual-" in job.id:  # paused, or a run_now() copy
            continue
        options = job_options(job.func)
        tags = dict(options.tags) if options is not None else {}
        jobs.append((job.id, job.name, job.trigger, next_run, tags))
    return jobs


def _history(
    engine: Engine, job_ids: Sequence[str], before: datetime
) -> dict[str, tuple[Any, Any, Any]]:
    """Per stored job id, of the rows of fire times before ``before`` (the scheduler's start:
    its own runs, recorded by the time this is read, are not the history it starts from): the
    latest fire time of a run (any row but ``missed``); when the latest ``missed`` row was
    recorded; and when the tracker instance that recorded its latest row (by fire time: a run,
    or a ``missed`` row a start recorded) was last alive — its clean stop, or its latest
    heartbeat. Until then a scheduler had the job (one still alive, another replica, was seen
    just now)."""
    missed = executions.c.status == Status.MISSED.value
    last_run = func.max(
        type_coerce(
            case((missed, None), else_=executions.c.scheduled_at), executions.c.scheduled_at.type
        )
    )
    last_missed = func.max(
        type_coerce(case((missed, executions.c.finished_at)), executions.c.finished_at.type)
    )
    seen = func.max(
        type_coerce(
            func.coalesce(instances.c.stopped_at, instances.c.heartbeat_at),
            instances.c.heartbeat_at.type,
        )
    )
    found: dict[str, tuple[Any, Any, Any]] = {}
    with engine.connect() as conn:
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            earlier = and_(executions.c.job_id.in_(chunk), executions.c.scheduled_at < before)
            for job_id, run, missed_at in conn.execute(
                select(executions.c.job_id, last_run, last_missed)
                .where(earlier)
                .group_by(executions.c.job_id)
            ):
                found[job_id] = (run, missed_at, None)
            latest = (
                select(executions.c.job_id, func.max(executions.c.scheduled_at).label("at"))
                .where(earlier)
                .group_by(executions.c.job_id)
                .subquery()
            )
            for job_id, seen_at in conn.execute(
                select(executions.c.job_id, seen)
                .join(
                    latest,
                    and_(
                        executions.c.job_id == latest.c.job_id,
                        executions.c.scheduled_at == latest.c.at,
                    ),
                )
                .join(instances, instances.c.instance == executions.c.instance)
                .group_by(executions.c.job_id)
            ):
                run, missed_at, _ = found[job_id]
                found[job_id] = (run, missed_at, seen_at)
    return found


def _utc(moment: Any) -> datetime | None:
    if isinstance(moment, str):  # (a SQLite aggregate may come back as its stored text)
        moment = datetime.fromisoformat(moment)
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _walk_from(trigger: Any, last_run: datetime, accounted: datetime | None) -> datetime:
    """Where to start stepping through the fire times after ``last_run`` to find those after
    ``accounted``: the latest fire time at or before it where the trigger says so at once
    (cron: an absolute schedule; interval: ``last_run`` plus whole intervals), else
    ``last_run`` (so the walk costs what the outage lasted, not the age of the last run)."""
    if accounted is None or accounted <= last_run:
        return last_run
    if isinstance(trigger, CronTrigger):
        return accounted
    if isinstance(trigger, IntervalTrigger):
        step: timedelta = trigger.interval
        if step > timedelta(0):
            return last_run + step * ((accounted - last_run) // step)
    return last_run


def missed_while_down(
    trigger: Any, last_run: datetime, accounted: datetime | None, until: datetime
) -> tuple[int, datetime | None, datetime | None]:
    """(how many, first, last) fire times of ``trigger`` after ``last_run`` (computed from it, as
    the scheduler that ran it would have), after ``accounted``, and before ``until``. At most
    :data:`_MOST_COUNTED` fire times are looked at."""
    count = 0
    first = last = None
    current: datetime | None = _walk_from(trigger, last_run, accounted)
    for _ in range(_MOST_COUNTED):
        if current is None:
            break
        following = trigger.get_next_fire_time(current, current + _STEP)
        if following is None or following <= current or following >= until:
            break
        current = following
        if accounted is None or following > accounted:
            count += 1
            first = first or following
            last = following
    return count, first, last


def record_downtime(
    hub: Hub,
    engine: Engine,
    jobs: Sequence[_Job],
    started: datetime,
) -> int:
    """Record, for each job, the fire times that passed before ``started`` with no scheduler
    (see the module's text); returns how many ``missed`` rows were recorded."""
    stored = [stored_job_id(job_id) for job_id, *_ in jobs]
    history = _history(engine, sorted(set(stored)), started)
    recorded = 0
    for (job_id, name, trigger, next_run, tags), key in zip(jobs, stored, strict=True):
        last_run, missed_at, seen = (_utc(v) for v in history.get(key, (None, None, None)))
        if last_run is None:
            continue
        accounted = max((m for m in (missed_at, seen) if m is not None), default=None)
        until = min(started, next_run.astimezone(UTC))
        try:
            schedule, _ = without_jitter(trigger)  # (asked again, the jitter draws anew)
            count, first, last = missed_while_down(schedule, last_run, accounted, until)
        except Exception:  # a trigger that cannot say: nothing to claim
            logger.exception("tracker could not compute the fire times of job %r", job_id)
            continue
        if not count or first is None or last is None:
            continue
        message = (
            f"{count} fire time(s) from {first.astimezone(UTC).isoformat()} to "
            f"{last.astimezone(UTC).isoformat()} passed while no scheduler ran this job "
            "(the service was down); none of them ran."
        )
        hub.record(missed_fire_times(job_id, name, first, count, message, tags))
        recorded += 1
    return recorded


def watch_starts(
    instrumentation: Any, hub: Hub, engine: Engine, ready: Callable[[float], bool]
) -> None:
    """Check for downtime each time the instrumented scheduler starts (now too, if it runs
    already), on a thread of its own once ``ready(timeout)`` (the history written so far) says
    so. Called by the instrumentation's own listener (``on_start``: one listener fewer for
    APScheduler to go through at every event), which stops with it when it is detached."""
    scheduler = instrumentation.scheduler

    def check() -> None:
        started = datetime.now(UTC)
        try:
            jobs = _due_jobs(scheduler)
        except Exception:
            logger.exception("tracker could not list the jobs to check for downtime")
            return
        if not jobs:
            return

        def run() -> None:
            try:
                ready(30.0)
                record_downtime(hub, engine, jobs, started)
            except Exception as exc:  # never break the service's start
                hub.report_error("downtime", exc)

        threading.Thread(target=run, name="tracker-downtime", daemon=True).start()

    def on_started(event: Any) -> None:
        check()

    instrumentation.on_start.append(on_started)
    if scheduler.running:
        check()
