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
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, and_, case, func, or_, select, type_coerce

from ..._decorator import job_options
from ..._hub import Hub
from ..._record import Origin, Status
from ...sinks.database.processes import process_started
from ...sinks.database.rows import stored_job_id
from ...sinks.database.schema import executions, instances
from .missed import missed_fire_times
from .registry import without_jitter

logger = logging.getLogger("tracker.apscheduler")

_MOST_COUNTED = 100_000
_ADDED_WITHIN = timedelta(minutes=1)
"""Jobs added this soon after the scheduler started are checked (the service adding its jobs as
it starts); those added later (one-shot jobs made as the service goes, jobs added through the
API) are not."""
_STEP = timedelta(microseconds=1)


_Job = tuple[str, str, Any, datetime, dict[str, str]]


def _due_jobs(found: Iterable[Any]) -> list[_Job]:
    """(id, name, trigger, next fire time, tags) of each of the scheduler's jobs ``found`` that
    has fire times to come."""
    jobs = []
    for job in found:
        next_run = getattr(job, "next_run_time", None)
        if next_run is None or "#manual-" in job.id:  # paused, or a run_now() copy
            continue
        if isinstance(job.trigger, DateTrigger):  # one fire time: none after its run
            continue
        options = job_options(job.func)
        tags = dict(options.tags) if options is not None else {}
        jobs.append((job.id, job.name, job.trigger, next_run, tags))
    return jobs


def _history(
    engine: Engine, job_ids: Sequence[str], before: datetime
) -> dict[str, tuple[Any, Any, Any]]:
    """Per stored job id, of the rows of fire times before ``before`` (the scheduler's start: its
    own runs, recorded by the time this is read, are not the history it starts from): the
    latest fire time of a scheduled run (not ``missed``, not a run started by hand or called
    directly); when the latest ``missed`` row was recorded; and when the tracker instance that
    recorded its latest row (by fire time: a run, or a ``missed`` row a start recorded) was
    last alive — its clean stop, or its latest heartbeat. Until then a scheduler had the job
    (one still alive, another replica, was seen just now)."""
    missed = executions.c.status == Status.MISSED.value
    # A run started by hand (run_now(), the API) or called directly is not a fire time of the
    # schedule: its scheduled_at is when it was asked for, off the schedule's steps.
    off_schedule = or_(missed, executions.c.origin != Origin.SCHEDULED.value)
    last_run = func.max(
        type_coerce(
            case((off_schedule, None), else_=executions.c.scheduled_at),
            executions.c.scheduled_at.type,
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


class Missed(NamedTuple):
    """The fire times :func:`missed_while_down` found."""

    how_many: int
    first: datetime | None
    last: datetime | None
    complete: bool
    """``False``: the count stopped at :data:`_MOST_COUNTED` fire times looked at, before
    ``until``; more passed."""


def missed_while_down(
    trigger: Any, last_run: datetime, accounted: datetime | None, until: datetime
) -> Missed:
    """The fire times of ``trigger`` after ``last_run`` (computed from it, as the scheduler that
    ran it would have), after ``accounted``, and before ``until``: how many, the first and the
    last. At most :data:`_MOST_COUNTED` fire times are looked at (``complete`` says whether
    that reached ``until``)."""
    count = 0
    first = last = None
    current: datetime | None = _walk_from(trigger, last_run, accounted)
    for _ in range(_MOST_COUNTED):
        if current is None:
            return Missed(count, first, last, True)
        # In UTC: in a time zone whose clock goes back, adding to 02:00 CEST (the first 02:00)
        # gives 02:00 CET's fields with its fold lost, an hour back; and two times in one zone
        # compare by their fields (02:00 CET would not come after 02:00 CEST).
        following = trigger.get_next_fire_time(current, current.astimezone(UTC) + _STEP)
        if following is None:
            return Missed(count, first, last, True)
        if following.timestamp() <= current.timestamp():  # the trigger did not move on
            return Missed(count, first, last, False)
        if following >= until:
            return Missed(count, first, last, True)
        current = following
        if accounted is None or following > accounted:
            count += 1
            first = first or following
            last = following
    return Missed(count, first, last, False)


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
            count, first, last, complete = missed_while_down(schedule, last_run, accounted, until)
        except Exception:  # a trigger that cannot say: nothing to claim
            logger.exception("tracker could not compute the fire times of job %r", job_id)
            continue
        if not count or first is None or last is None:
            continue
        if complete:
            message = (
                f"{count} fire time(s) from {first.astimezone(UTC).isoformat()} to "
                f"{last.astimezone(UTC).isoformat()} passed while no scheduler ran this job "
                "(the service was down); none of them ran."
            )
        else:
            message = (
                f"At least {count} fire time(s), from {first.astimezone(UTC).isoformat()} until "
                f"the scheduler started at {until.astimezone(UTC).isoformat()}, passed while no "
                f"scheduler ran this job (the service was down); none of them ran. Counting "
                f"stopped at {last.astimezone(UTC).isoformat()}."
            )
        hub.record(missed_fire_times(job_id, name, first, count, message, tags))
        recorded += 1
    return recorded


def watch_starts(
    instrumentation: Any, hub: Hub, engine: Engine, ready: Callable[[float], bool]
) -> Callable[[float], None]:
    """Check for downtime each time the instrumented scheduler starts, and for each job added
    in the minute after (a service that starts its scheduler, then adds its jobs), once per job
    and start, on a thread of its own once ``ready(timeout)`` (the history written so far) says so.
    Attached to a scheduler that runs already, the check counts the fire times up to when this
    process started (those after it the scheduler may have run, untracked); where that is not
    known, it is skipped. Called by the instrumentation's own listener (``on_start``,
    ``on_added``: no listener more for APScheduler to go through at every event), which stops
    with it when it is detached. Returns a function waiting (at most its argument, in seconds)
    for the check's thread to end: it stops once the hub is closed."""
    scheduler = instrumentation.scheduler
    lock = threading.Lock()
    # What is waiting to be checked: whole starts (all the jobs there, at that time), and jobs
    # added since a start, by id (looked up and checked together, on the checking thread: a
    # service adding thousands of jobs makes a few history queries, not one each).
    state: dict[str, Any] = {
        "started": None,
        "checked": set(),
        "waiting": [],
        "busy": False,
        "thread": None,
    }

    def record(work: tuple[datetime, list[_Job] | None, str | None]) -> None:
        with lock:
            state["waiting"].append(work)
            if state["busy"]:
                return  # the thread at work takes it too
            state["busy"] = True
            thread = state["thread"] = threading.Thread(
                target=run, name="tracker-downtime", daemon=True
            )
            thread.start()  # (under the lock: wait() never finds it not started)

    def run() -> None:
        try:
            ready(30.0)
            while True:
                with lock:
                    waiting, state["waiting"] = state["waiting"], []
                    if not waiting or hub.closed:  # (closed: its history is let go)
                        state["busy"] = False
                        return
                for started, jobs in _grouped(scheduler, waiting):
                    try:
                        record_downtime(hub, engine, jobs, started)
                    except Exception as exc:  # never break the service's start
                        hub.report_error("downtime", exc)
        except Exception as exc:
            hub.report_error("downtime", exc)
        finally:
            with lock:
                state["busy"] = False

    def check(started: datetime) -> None:
        try:
            found = scheduler.get_jobs()
            jobs = _due_jobs(found)
        except Exception:
            logger.exception("tracker could not list the jobs to check for downtime")
            return
        with lock:
            state["started"] = started
            state["checked"] = {job.id for job in found}
        if jobs:
            record((started, jobs, None))

    def on_started(event: Any) -> None:
        check(datetime.now(UTC))

    def on_added(event: Any) -> None:
        if not scheduler.running:  # (a job added before start() is looked at when it starts)
            return
        job_id = event.job_id
        known = instrumentation.registry.get(job_id)  # (learned just before)
        if known is not None and isinstance(known.trigger, DateTrigger):
            return  # one fire time: none after its run (and one-shot jobs come by thousands)
        with lock:
            started = state["started"]
            if started is None or job_id in state["checked"]:
                return
            if datetime.now(UTC) - started > _ADDED_WITHIN:
                state["checked"] = set()  # the service's start is over: nothing more to check
                return
            state["checked"].add(job_id)
        record((started, None, job_id))

    def wait(timeout: float) -> None:
        with lock:
            thread = state["thread"]
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    instrumentation.on_start.append(on_started)
    instrumentation.on_added.append(on_added)
    if scheduler.running:
        born = process_started(os.getpid())
        if born is None:
            logger.info(
                "tracker does not check the fire times that passed while the service was down: "
                "the scheduler runs already, and when this process started is not known"
            )
            try:
                found = scheduler.get_jobs()
            except Exception:
                found = []
            with lock:  # (jobs added from now on are looked at)
                state["started"] = datetime.now(UTC)
                state["checked"] = {job.id for job in found}
            return wait
        check(datetime.fromtimestamp(born, UTC))
    return wait


def _grouped(
    scheduler: Any, waiting: list[tuple[datetime, list[_Job] | None, str | None]]
) -> list[tuple[datetime, list[_Job]]]:
    """The jobs to check, by the start they are checked against: whole starts as they were,
    and the jobs added since, looked up now."""
    groups: list[tuple[datetime, list[_Job]]] = []
    added: dict[datetime, list[str]] = {}
    for started, jobs, job_id in waiting:
        if jobs is not None:
            groups.append((started, jobs))
        elif job_id is not None:
            added.setdefault(started, []).append(job_id)
    for started, job_ids in added.items():
        try:
            jobs = _due_jobs(job for job in map(scheduler.get_job, job_ids) if job is not None)
        except Exception:
            logger.exception("tracker could not read the jobs added to check for downtime")
            continue
        if jobs:
            groups.append((started, jobs))
    return groups
