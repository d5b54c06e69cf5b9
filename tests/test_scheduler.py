"""Every run of every job recorded through real APScheduler schedulers, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import support
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from tracker import BaseSink, Execution, JobState, Origin, Status, current_run, tracked_job

DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}


def background(**options) -> BackgroundScheduler:
    return BackgroundScheduler(
        job_defaults={**DEFAULTS, **options.pop("job_defaults", {})}, timezone="UTC", **options
    )


class JobStates(BaseSink):
    """Keeps every job state the hub publishes."""

    name = "jobs"

    def __init__(self) -> None:
        self.states: list[JobState] = []

    def handle(self, events) -> None:
        self.states.extend(e for e in events if isinstance(e, JobState))


def finished(tracker, **filters):
    tracker.flush()
    return [e for e in tracker.executions(limit=1000, **filters) if e.is_finished]


def test_background_scheduler_records_every_run(tracker) -> None:
    """Decorated and undecorated jobs, succeeding and failing: each run is one row, its outcome."""
    scheduler = background()
    tracker.instrument(scheduler)
    scheduler.add_job(support.ok_job, "interval", seconds=0.1, id="ok", replace_existing=True)
    scheduler.add_job(support.failing_job, "interval", seconds=0.1, id="bad")
    scheduler.add_job(support.plain_job, "interval", seconds=0.1, id="plain")
    scheduler.add_job(support.plain_failing_job, "interval", seconds=0.1, id="plain_bad")
    scheduler.start()
    try:
        support.wait_for(
            lambda: all(
                len(finished(tracker, job_id=j)) >= 3 for j in ("ok", "bad", "plain", "plain_bad")
            )
        )
    finally:
        scheduler.shutdown(wait=True)
    assert tracker.flush()
    rows = tracker.executions(limit=1000)
    assert all(r.is_finished for r in rows), "a clean shutdown leaves no run open"
    by_job: dict[str, set[Status]] = {}
    for r in rows:
        by_job.setdefault(r.job_id, set()).add(r.status)
    assert by_job == {
        "ok": {Status.SUCCEEDED},
        "bad": {Status.FAILED},
        "plain": {Status.SUCCEEDED},
        "plain_bad": {Status.FAILED},
    }
    bad = next(r for r in rows if r.job_id == "bad")
    assert bad.error_type == "ValueError" and "invoice 42" in bad.error_message
    assert dict(bad.tags) == {"team": "billing"}
    plain_bad = next(r for r in rows if r.job_id == "plain_bad")
    assert plain_bad.error_type == "KeyError" and "plain_failing_job" in plain_bad.traceback
    for r in rows:
        assert r.scheduled_at.tzinfo is UTC and r.started_at.tzinfo is UTC
        assert r.instance == tracker.instance
        assert 0 <= r.lateness_s < 5
        assert r.duration_s is not None and r.duration_s >= 0
        assert r.finished_at >= r.started_at


def test_fire_time_and_true_start_are_recorded(tracker) -> None:
    """scheduled_at is the fire time that was due; started_at is measured inside the run."""
    scheduler = background()
    tracker.instrument(scheduler)
    due = datetime.now(UTC) + timedelta(seconds=0.3)
    scheduler.add_job(support.ok_job, "date", run_date=due, id="once")
    scheduler.start()
    try:
        (row,) = support.wait_for(lambda: finished(tracker, job_id="once"))
    finally:
        scheduler.shutdown()
    assert row.scheduled_at == due
    assert row.started_at >= due
    assert row.lateness_s == pytest.approx((row.started_at - due).total_seconds())
    assert row.run_id in support.RUNS  # the job saw its own run id


def test_asyncio_scheduler_records_async_and_sync_jobs(tracker) -> None:
    """Under AsyncIOScheduler, async jobs are awaited and tracked, sync ones too."""

    async def main() -> None:
        scheduler = AsyncIOScheduler(job_defaults=DEFAULTS, timezone="UTC")
        tracker.instrument(scheduler)
        scheduler.add_job(support.async_ok_job, "interval", seconds=0.1, id="a_ok")
        scheduler.add_job(support.async_failing_job, "interval", seconds=0.1, id="a_bad")
        scheduler.add_job(support.ok_job, "interval", seconds=0.1, id="s_ok")
        scheduler.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if all(len(finished(tracker, job_id=j)) >= 2 for j in ("a_ok", "a_bad", "s_ok")):
                break
        scheduler.shutdown(wait=False)

    asyncio.run(main())
    statuses = {r.job_id: r.status for r in finished(tracker)}
    assert statuses == {"a_ok": Status.SUCCEEDED, "a_bad": Status.FAILED, "s_ok": Status.SUCCEEDED}
    a_bad = finished(tracker, job_id="a_bad")[0]
    assert a_bad.error_type == "RuntimeError" and a_bad.started_at is not None


_SEEN_BY_HEARTBEAT: list[object] = []
_SCHEDULERS: list[AsyncIOScheduler] = []
_BEATS: list[asyncio.Event] = []


@tracked_job
async def _refresh(source: str) -> None:
    if source == "api":
        # Wakes the scheduler (call_soon_threadsafe): from then on its timer chain, and every
        # job it starts, runs in a copy of this run's context.
        _SCHEDULERS[0].modify_job("heartbeat", kwargs={})


async def _heartbeat() -> None:
    _SEEN_BY_HEARTBEAT.append(current_run())
    await _refresh("heartbeat")
    if len(_SEEN_BY_HEARTBEAT) >= 3:
        _BEATS[0].set()


def test_a_run_that_wakes_the_asyncio_scheduler_is_not_current_in_later_jobs(tracker) -> None:
    """A tracked function (here called directly, as from an HTTP endpoint) that calls
    ``modify_job()`` wakes AsyncIOScheduler, whose timer chain then runs every later job in a
    copy of that run's context: after the run ended, an undecorated job there sees no current
    run, and each call of the tracked function from it is a run of its own (it was taken for a
    recursive call of the ended run, and not recorded)."""

    async def main() -> None:
        scheduler = AsyncIOScheduler(job_defaults=DEFAULTS, timezone="UTC")
        _SCHEDULERS[:] = [scheduler]
        _BEATS[:] = [asyncio.Event()]
        tracker.instrument(scheduler)
        scheduler.add_job(_heartbeat, "interval", seconds=0.05, id="heartbeat")
        scheduler.start()
        await asyncio.sleep(0.01)
        await _refresh("api")
        _SEEN_BY_HEARTBEAT.clear()
        await asyncio.wait_for(_BEATS[0].wait(), 10)
        scheduler.shutdown(wait=False)

    asyncio.run(main())
    assert _SEEN_BY_HEARTBEAT[:3] == [None, None, None]
    refreshed = finished(tracker, job_id=_refresh.__qualname__)
    assert len(refreshed) >= 1 + 3
    assert {r.origin for r in refreshed} == {Origin.DIRECT}


_WHILE_DOWN = "passed while no scheduler ran this job"
"""What the downtime check's ``missed`` rows say (the busy machine may coalesce fire times of
the running services too: those rows say so)."""


def test_a_tracker_taking_over_an_asyncio_scheduler_keeps_runs_out_of_callers_context(
    tracker_factory,
) -> None:
    """Runs of an AsyncIOScheduler start from its start()'s context, not that of the code that
    woke it (a request adding a job). A second tracker instrumenting the running scheduler,
    then the first one closed: the first took that away with it."""
    request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id")
    seen: list[str | None] = []

    @tracked_job
    async def report() -> None:
        seen.append(request_id.get(None))

    async def main() -> None:
        scheduler = AsyncIOScheduler(timezone="UTC")
        first = tracker_factory()
        first.instrument(scheduler)
        scheduler.start()
        second = tracker_factory()
        second.instrument(scheduler)
        first.close()

        async def request() -> None:
            request_id.set("req-1")
            scheduler.add_job(report, id="report")

        await asyncio.create_task(request())
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0.01)
        assert second.flush(10)
        (row,) = second.executions(job_id="report")
        assert row.status is Status.SUCCEEDED

    asyncio.run(main())
    assert seen == [None]


def test_fire_times_that_passed_while_the_service_was_down_are_one_missed_row(
    tracker_factory, database_url
) -> None:
    """The service adds its job with ``replace_existing=True`` at every start (APScheduler then
    computes its next fire time afresh, and nothing of the fire times due while it was down
    remains): when the scheduler starts, the fire times, computed from the last recorded run,
    that fell due after the service stopped and before it started again become one ``missed``
    row counting them. Starting again adds only what fell due in the new gap."""
    from tracker.sinks.database import create_tracker_engine, select_executions
    from tracker.sinks.database.schema import instances

    interval = 0.1
    engine = create_tracker_engine(database_url)

    def rows(status: str) -> list[Execution]:
        return select_executions(engine, job_id="sync", status=status, limit=1000)

    def while_down_rows() -> list[Execution]:
        """The downtime check's rows (not those of fire times the busy machine coalesced)."""
        return [r for r in rows("missed") if _WHILE_DOWN in (r.error_message or "")]

    def run_service(until) -> tuple[tuple[datetime, datetime], datetime]:
        """Start the service (a new tracker and scheduler), wait ``until()``, stop it cleanly;
        returns when its scheduler started (between two times) and when its tracker stopped."""
        tracker = tracker_factory()
        scheduler = background()
        tracker.instrument(scheduler)
        scheduler.add_job(
            support.ok_job,
            "interval",
            seconds=interval,
            id="sync",
            replace_existing=True,
        )
        before = datetime.now(UTC)
        scheduler.start()  # (the check takes the time of the start in there)
        started = (before, datetime.now(UTC))
        try:
            support.wait_for(until)
            assert tracker.flush(10)
        finally:
            scheduler.shutdown(wait=True)
            tracker.close()
        with engine.connect() as conn:
            stopped = conn.execute(
                select(instances.c.stopped_at).where(instances.c.instance == tracker.instance)
            ).scalar_one()
        return started, stopped.replace(tzinfo=UTC) if stopped.tzinfo is None else stopped

    try:
        _, stopped_first = run_service(lambda: len(rows("succeeded")) >= 2)
        last = max(r.scheduled_at for r in rows("succeeded"))
        due = [last + timedelta(seconds=interval * k) for k in range(1, 1000)]
        time.sleep(6 * interval)  # down: about six fire times pass
        (before, after), stopped = run_service(while_down_rows)
        (missed,) = while_down_rows()
        while_down = [d for d in due if stopped_first < d < after]
        low = len([d for d in while_down if d < before])
        assert low <= missed.coalesced <= len(while_down)
        assert missed.coalesced >= 5
        assert missed.scheduled_at == while_down[0]
        # (the second service may have run the job before it stopped: the last run then)
        last = max(r.scheduled_at for r in rows("succeeded"))
        done = len(rows("succeeded"))
        (before, after), _ = run_service(lambda: len(rows("succeeded")) > done)
        again = [last + timedelta(seconds=interval * k) for k in range(1, 1000)]
        again = [d for d in again if stopped < d < after]
        rest = [r.coalesced for r in while_down_rows() if r.run_id != missed.run_id]
        assert len(rest) <= 1
        assert len([d for d in again if d < before]) <= sum(rest) <= len(again)
    finally:
        engine.dispose()


def test_two_services_on_one_tracker_database_down_together_each_get_their_missed_row(
    tracker_factory, database_url
) -> None:
    """Two services share the tracker's database and come back together (a host rebooted):
    each job's outage is judged by the instance that ran it, not by the other service's fresh
    heartbeat (which used to hide both outages)."""
    from tracker.sinks.database import create_tracker_engine, select_executions

    engine = create_tracker_engine(database_url)

    def start(job_id: str) -> tuple[Any, BackgroundScheduler]:
        tracker = tracker_factory()
        scheduler = background()
        tracker.instrument(scheduler)
        scheduler.add_job(support.ok_job, "interval", seconds=0.1, id=job_id, replace_existing=True)
        scheduler.start()
        return tracker, scheduler

    def stop(service: tuple[Any, BackgroundScheduler]) -> None:
        service[1].shutdown(wait=True)
        service[0].close()

    def rows(job_id: str, status: str) -> list[Execution]:
        return select_executions(engine, job_id=job_id, status=status, limit=1000)

    def while_down_rows(job_id: str) -> list[Execution]:
        missed = rows(job_id, "missed")
        return [r for r in missed if _WHILE_DOWN in (r.error_message or "")]

    try:
        services = [start("billing"), start("reports")]
        support.wait_for(
            lambda: all(len(rows(j, "succeeded")) >= 2 for j in ("billing", "reports"))
        )
        for service in services:
            stop(service)
        time.sleep(0.6)  # both down: about six fire times each
        services = [start("billing"), start("reports")]
        try:
            support.wait_for(lambda: all(while_down_rows(j) for j in ("billing", "reports")))
        finally:
            for service in services:
                stop(service)
        for job_id in ("billing", "reports"):
            (missed,) = while_down_rows(job_id)
            assert missed.coalesced >= 4
    finally:
        engine.dispose()


def _run_row(
    tracker: Any, at: datetime, origin: Origin = Origin.SCHEDULED, *, job_id: str = "sync"
) -> Execution:
    """A succeeded run of ``job_id`` due (and run) at ``at``, recorded by ``tracker``."""
    return support.finished(job_id, at, instance=tracker.instance, origin=origin)


def test_the_downtime_check_reads_the_history_from_before_the_start(tracker_factory) -> None:
    """The check reads the history on a thread of its own, after a flush: on a busy machine the
    new service's first run could be written by then, and was taken for the last run before
    the outage (its instance alive: nothing was claimed; seen in the full suite). Only fire
    times before the start are the history it starts from."""
    from apscheduler.triggers.interval import IntervalTrigger

    from tracker.integrations.apscheduler.downtime import record_downtime

    first, closing, closed = _stopped_service_with_a_run(tracker_factory, "sync")
    time.sleep(0.5)  # about five fire times pass
    new = tracker_factory()
    started = datetime.now(UTC)
    new.hub.record(_run_row(new, started + timedelta(seconds=0.05)))  # its own first run, written
    assert new.flush(10)
    trigger = IntervalTrigger(seconds=0.1, start_date=first, timezone=UTC)
    job = ("sync", "sync", trigger, started + timedelta(seconds=0.15), {})
    assert record_downtime(new.hub, new.engine, [job], started) == 1
    assert new.flush(10)
    (missed,) = new.executions(job_id="sync", status="missed")
    assert _WHILE_DOWN in (missed.error_message or "")
    due = [first + timedelta(seconds=0.1 * k) for k in range(1, 200)]
    # (the old tracker stopped somewhere between `closing` and `closed`: on a busy machine,
    # starting the new one may take a while too)
    least = len([d for d in due if closed < d < started])
    most = len([d for d in due if closing < d < started])
    assert least >= 3
    assert least <= missed.coalesced <= most


def test_the_downtime_walk_costs_what_the_outage_lasted() -> None:
    """A job whose last run is two days old, but whose tracker was seen five minutes ago (it was
    paused, say): the fire times are looked at from then on, not from two days ago."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    from tracker.integrations.apscheduler.downtime import missed_while_down

    asked: list[object] = []

    class CountedCron(CronTrigger):
        def get_next_fire_time(self, previous: Any, now: Any) -> Any:
            asked.append(previous)
            return super().get_next_fire_time(previous, now)

    class CountedInterval(IntervalTrigger):
        def get_next_fire_time(self, previous: Any, now: Any) -> Any:
            asked.append(previous)
            return super().get_next_fire_time(previous, now)

    now = datetime.now(UTC).replace(second=30, microsecond=0)
    for trigger in (
        CountedCron(minute="*", timezone="Europe/Berlin"),
        CountedInterval(minutes=1, timezone=UTC),
    ):
        asked.clear()
        count, first, _, _ = missed_while_down(
            trigger, now - timedelta(days=2), now - timedelta(minutes=5), now
        )
        assert 4 <= count <= 5
        assert first is not None and first > now - timedelta(minutes=5)
        assert len(asked) <= count + 2


def test_the_downtime_walk_goes_on_past_the_hour_a_clock_goes_back() -> None:
    """An hourly job in a scheduler in Paris, down over the night the clocks go back: every
    fire time of the outage is counted (the walk compared wall-clock times, and stopped at the
    repeated 02:00)."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    from tracker.integrations.apscheduler.downtime import missed_while_down

    hourly = IntervalTrigger(hours=1, timezone="Europe/Paris")
    last_run = datetime(2025, 10, 25, 22, 0, tzinfo=UTC)  # 00:00 CEST
    found = missed_while_down(
        hourly, last_run, last_run + timedelta(minutes=5), datetime(2025, 10, 26, 5, 30, tzinfo=UTC)
    )
    assert found.how_many == 7  # 23:00 to 05:00 UTC
    assert found.first == last_run + timedelta(hours=1)
    assert found.last == datetime(2025, 10, 26, 5, 0, tzinfo=UTC)
    assert found.complete
    # A cron trigger: asked for the fire time after the first 02:00 (CEST) with "now" an
    # instant later in the zone's fields, it answered an hour back (the fold lost).
    hourly_cron = CronTrigger(minute=0, timezone="Europe/Paris")
    last_run = datetime(2024, 10, 26, 21, 0, tzinfo=UTC)  # 23:00 CEST
    found = missed_while_down(
        hourly_cron,
        last_run,
        last_run + timedelta(minutes=5),
        datetime(2024, 10, 27, 5, 30, tzinfo=UTC),
    )
    assert found.how_many == 8  # 00:00, 01:00, 02:00 CEST, 02:00 CET, 03:00 to 06:00 CET
    assert found.last == datetime(2024, 10, 27, 5, 0, tzinfo=UTC)
    assert found.complete


def test_a_downtime_too_long_to_count_says_the_count_is_a_floor(tracker_factory) -> None:
    """A job every second, down for a year: the walk stops after 100,000 fire times, and the
    ``missed`` row says "at least" and up to when the outage lasted (it named its last counted
    fire time as the end, as if that were all)."""
    from apscheduler.triggers.interval import IntervalTrigger
    from sqlalchemy import update

    from tracker.integrations.apscheduler.downtime import record_downtime
    from tracker.sinks.database.schema import instances

    started = datetime.now(UTC)
    last = started - timedelta(days=365)
    old = tracker_factory()
    old.hub.record(_run_row(old, last, job_id="every_second"))
    old.close()
    new = tracker_factory()
    with new.engine.begin() as conn:  # the old service stopped a year ago, just after its run
        conn.execute(
            update(instances)
            .where(instances.c.instance == old.instance)
            .values(stopped_at=last + timedelta(seconds=0.5))
        )
    trigger = IntervalTrigger(seconds=1, start_date=last, timezone=UTC)
    job = ("every_second", "every_second", trigger, started + timedelta(seconds=1), {})
    assert record_downtime(new.hub, new.engine, [job], started) == 1
    assert new.flush(10)
    (missed,) = new.executions(job_id="every_second", status="missed")
    assert missed.coalesced == 100_000
    assert (missed.error_message or "").startswith("At least 100000 fire time(s)")
    assert f"until the scheduler started at {started.isoformat()}" in (missed.error_message or "")


def test_a_run_started_by_hand_is_not_where_the_downtime_walk_starts(tracker_factory) -> None:
    """The last run before the outage was a manual one (``run_now()``, the API), asked for
    between two fire times: the fire times that passed are still the schedule's, counted from
    its last scheduled run (the walk started from the manual run's time, off the schedule)."""
    from apscheduler.triggers.interval import IntervalTrigger

    from tracker.integrations.apscheduler.downtime import record_downtime

    first, closing, closed = _stopped_service_with_a_run(
        tracker_factory, "sync", manual_after=timedelta(seconds=0.55)
    )
    time.sleep(0.5)  # about five fire times pass
    new = tracker_factory()
    started = datetime.now(UTC)
    trigger = IntervalTrigger(seconds=0.1, start_date=first, timezone=UTC)
    job = ("sync", "sync", trigger, started + timedelta(seconds=0.15), {})
    assert record_downtime(new.hub, new.engine, [job], started) == 1
    assert new.flush(10)
    (missed,) = new.executions(job_id="sync", status="missed")
    steps = (missed.scheduled_at - first) / timedelta(seconds=0.1)
    assert steps == round(steps), f"{missed.scheduled_at} is not a fire time of the schedule"
    due = [first + timedelta(seconds=0.1 * k) for k in range(1, 200)]
    least = len([d for d in due if closed < d < started])
    assert least <= missed.coalesced <= len([d for d in due if closing < d < started])


def _stopped_service_with_a_run(
    tracker_factory, job_id: str, manual_after: timedelta | None = None
) -> tuple[datetime, datetime, datetime]:
    """A service that ran ``job_id`` once a second ago (its row written; and by hand,
    ``manual_after`` that) and stopped: when that run was due, and between which two times the
    service stopped."""
    first = datetime.now(UTC) - timedelta(seconds=1)
    old = tracker_factory()
    old.hub.record(_run_row(old, first, job_id=job_id))
    if manual_after is not None:
        old.hub.record(_run_row(old, first + manual_after, Origin.MANUAL, job_id=job_id))
    closing = datetime.now(UTC)
    old.close()  # stopped: the outage starts
    return first, closing, datetime.now(UTC)


def _downtime_checked() -> bool:
    return not any(t.name == "tracker-downtime" for t in threading.enumerate())


def test_a_job_added_after_the_scheduler_started_is_checked_for_downtime(tracker_factory) -> None:
    """A service that starts its scheduler, then adds its jobs (``replace_existing=True``, in a
    FastAPI lifespan, say): the fire times that passed while it was down are one ``missed`` row
    all the same (only the jobs there at the start were looked at)."""
    first, closing, closed = _stopped_service_with_a_run(tracker_factory, "sync")
    time.sleep(0.5)  # down: about five fire times pass
    tracker = tracker_factory()
    scheduler = background()
    tracker.instrument(scheduler)
    starting = datetime.now(UTC)
    scheduler.start()
    started = datetime.now(UTC)
    try:
        scheduler.add_job(support.ok_job, "interval", seconds=0.1, id="sync", replace_existing=True)

        def while_down() -> list[Execution]:
            tracker.flush(10)
            rows = tracker.executions(job_id="sync", status="missed")
            return [r for r in rows if _WHILE_DOWN in (r.error_message or "")]

        (missed,) = support.wait_for(while_down)
    finally:
        scheduler.shutdown(wait=True)
    due = [first + timedelta(seconds=0.1 * k) for k in range(1, 200)]
    least = len([d for d in due if closed < d < starting])
    assert least >= 3
    assert least <= missed.coalesced <= len([d for d in due if closing < d < started])


def test_a_scheduler_that_ran_before_it_was_instrumented_is_not_said_to_have_been_down(
    tracker_factory,
) -> None:
    """``tracker.instrument()`` of a scheduler that has been running its jobs (untracked) for a
    while: the fire times it ran are not claimed as passed while the service was down (they
    were counted up to the moment of the instrumentation)."""
    _stopped_service_with_a_run(tracker_factory, "sync")
    scheduler = background()
    scheduler.add_job(support.ok_job, "interval", seconds=0.1, id="sync", replace_existing=True)
    scheduler.start()
    try:
        time.sleep(0.5)  # about five runs, untracked
        tracker = tracker_factory()
        tracker.instrument(scheduler)
        support.wait_for(_downtime_checked)
        support.wait_for(lambda: len(finished(tracker, job_id="sync")) >= 2)
    finally:
        scheduler.shutdown(wait=True)
    assert tracker.flush(10)
    missed = tracker.executions(job_id="sync", status="missed")
    assert [r for r in missed if _WHILE_DOWN in (r.error_message or "")] == []


def test_real_misfire_is_recorded_as_missed(tracker) -> None:
    """A fire time passing beyond misfire_grace_time (the only worker is busy) is `missed`."""
    scheduler = background(executors={"default": ThreadPoolExecutor(1)})
    tracker.instrument(scheduler)
    now = datetime.now(UTC)
    scheduler.add_job(support.slow_job, "date", run_date=now, args=[1.4], id="blocker")
    late = now + timedelta(seconds=0.1)
    scheduler.add_job(support.ok_job, "date", run_date=late, id="victim", misfire_grace_time=1)
    scheduler.start()
    try:
        (row,) = support.wait_for(lambda: finished(tracker, job_id="victim"))
    finally:
        scheduler.shutdown()
    assert row.status is Status.MISSED
    assert row.scheduled_at == late
    assert row.started_at is None


def test_an_undecorated_jobs_missed_fire_time_is_one_missed_row(tracker_factory) -> None:
    """APScheduler announces the submission of a fire time it then finds missed (its run_job
    checks the grace time): for an undecorated job that opened a run, which stayed in progress
    and became an ``interrupted`` row at close, beside the ``missed`` one. One ``missed`` row."""
    tracker = tracker_factory()
    scheduler = background()
    tracker.instrument(scheduler)
    due = datetime.now(UTC) - timedelta(seconds=5)
    scheduler.add_job(
        support.plain_job, "interval", hours=1, id="plain", next_run_time=due, misfire_grace_time=1
    )
    scheduler.start()
    try:
        (row,) = support.wait_for(lambda: finished(tracker, job_id="plain"))
        assert tracker.flush(10)
        assert tracker.stats().live_runs == 0
    finally:
        scheduler.shutdown()
    tracker.close()
    assert row.status is Status.MISSED and row.scheduled_at == due
    with tracker_factory() as later:
        assert [r.status for r in later.executions(job_id="plain")] == [Status.MISSED]


def test_one_job_id_in_two_schedulers_on_one_tracker_is_two_runs(tracker) -> None:
    """Runs known from events were told apart by job id and fire time only: the same job id in
    two schedulers, at the same fire time, made one run of the two (the second start ignored,
    its end recorded as a run of no duration, as late as the first run was long)."""
    schedulers = [background(), background()]
    start = datetime.now(UTC) + timedelta(seconds=0.3)
    for scheduler in schedulers:
        tracker.instrument(scheduler)
        scheduler.add_job(support.plain_slow_job, "date", run_date=start, args=[0.3], id="nightly")
        scheduler.start()
    try:
        rows = support.wait_for(
            lambda: (
                len(finished(tracker, job_id="nightly")) == 2
                and finished(tracker, job_id="nightly")
            )
        )
    finally:
        for scheduler in schedulers:
            scheduler.shutdown()
    assert len({r.run_id for r in rows}) == 2
    for row in rows:
        assert row.status is Status.SUCCEEDED
        assert row.duration_s is not None and row.duration_s >= 0.25
        assert row.lateness_s < 0.25


def test_max_instances_skip_is_recorded(tracker) -> None:
    """A fire time not started because the previous run is still going becomes `skipped`."""
    scheduler = background()
    tracker.instrument(scheduler)
    scheduler.add_job(
        support.slow_job,
        "interval",
        seconds=0.1,
        args=[0.5],
        id="slow",
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    try:
        support.wait_for(lambda: finished(tracker, job_id="slow", status=Status.SKIPPED))
    finally:
        scheduler.shutdown(wait=True)
    skipped = finished(tracker, job_id="slow", status="skipped")
    ran = finished(tracker, job_id="slow", status="succeeded")
    assert ran, "the long run itself is recorded"
    started = {r.scheduled_at for r in ran}
    assert all(s.scheduled_at not in started for s in skipped)
    assert all("max_instances" in s.error_message for s in skipped)


def test_coalesced_fire_times_are_counted(tracker) -> None:
    """Fire times folded into one run by coalescing become one `missed` row with a count."""
    scheduler = background()
    tracker.instrument(scheduler)
    scheduler.add_job(support.ok_job, "interval", seconds=0.1, id="tick")
    scheduler.start()
    try:
        support.wait_for(lambda: finished(tracker, job_id="tick"))
        scheduler.pause()
        time.sleep(0.65)
        scheduler.resume()
        coalesced = support.wait_for(
            lambda: [r for r in finished(tracker, job_id="tick", status="missed") if r.coalesced]
        )
    finally:
        scheduler.shutdown()
    (row,) = coalesced
    assert 4 <= row.coalesced <= 8
    assert "coalesced" in row.error_message


def test_manual_run_is_tracked_without_moving_the_schedule(tracker) -> None:
    """run_now() runs the job once, as manual under its own id; its next run is unchanged."""
    scheduler = background()
    instrumentation = tracker.instrument(scheduler)
    scheduler.add_job(support.ok_job, "interval", hours=1, id="hourly")
    scheduler.start()
    try:
        before = scheduler.get_job("hourly").next_run_time
        instrumentation.run_now("hourly")
        (row,) = support.wait_for(lambda: finished(tracker, job_id="hourly"))
        assert scheduler.get_job("hourly").next_run_time == before
    finally:
        scheduler.shutdown()
    assert row.origin is Origin.MANUAL and row.status is Status.SUCCEEDED


def test_run_now_counts_the_manual_runs_not_started_yet(tracker) -> None:
    """run_now() refused a job whose max_instances runs were going, but counted only started
    runs: on a paused scheduler (or two requests at once) every call was taken, and the copies
    all ran together when it resumed. Copies waiting to start count too."""
    from tracker.integrations.apscheduler.instrument import RunsInProgress

    scheduler = background()
    instrumentation = tracker.instrument(scheduler)
    scheduler.add_job(support.ok_job, "interval", hours=1, id="hourly", max_instances=1)
    scheduler.start(paused=True)
    try:
        instrumentation.run_now("hourly")
        with pytest.raises(RunsInProgress):
            instrumentation.run_now("hourly")
        scheduler.resume()
        (row,) = support.wait_for(lambda: finished(tracker, job_id="hourly"))
        instrumentation.run_now("hourly")  # the copy ran: room again
        support.wait_for(lambda: len(finished(tracker, job_id="hourly")) == 2)
    finally:
        scheduler.shutdown()
    assert row.origin is Origin.MANUAL


def test_a_manual_run_waiting_in_a_persistent_store_at_restart_stays_manual(
    tracker_factory, tmp_path
) -> None:
    """A run_now() copy still in a SQLAlchemyJobStore when the service stopped runs after the
    restart: it was recorded as a scheduled run of a job named ``<id>#manual-…`` (the map from
    copy to job was in the old process's memory). It is a manual run of its job."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    store_url = f"sqlite:///{tmp_path}/jobs.sqlite3"
    first = tracker_factory()  # (its database: the same as the second's)
    database = first.engine.url.render_as_string(hide_password=False)
    first.close()
    # The first service, in a process of its own: the copy is stored while its scheduler is
    # paused, then the process ends without shutting anything down (as a redeploy kills it).
    service = f"""
import os, support
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from tracker import Tracker
tracker = Tracker({database!r}, metrics=False)
scheduler = BackgroundScheduler(jobstores={{"default": SQLAlchemyJobStore(url={store_url!r})}})
instrumentation = tracker.instrument(scheduler)
scheduler.add_job(support.ok_job, "interval", hours=1, id="hourly")
scheduler.start(paused=True)
instrumentation.run_now("hourly")
tracker.close()
os._exit(0)
"""
    here = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, *sys.path])}
    subprocess.run([sys.executable, "-c", service], env=env, check=True, timeout=60)

    second = tracker_factory()
    scheduler = background(jobstores={"default": SQLAlchemyJobStore(url=store_url)})
    second.instrument(scheduler)
    scheduler.start()
    try:
        (row,) = support.wait_for(lambda: finished(second, job_id="hourly"))
    finally:
        scheduler.shutdown()
    assert row.origin is Origin.MANUAL
    assert not [r for r in second.executions() if "#manual-" in r.job_id]


def test_executions_filters_and_order(tracker) -> None:
    """executions() filters by job, status, since/until and limit, newest first."""
    scheduler = background()
    tracker.instrument(scheduler)
    start = datetime.now(UTC)
    scheduler.add_job(support.ok_job, "interval", seconds=0.05, id="ok")
    scheduler.add_job(support.failing_job, "interval", seconds=0.05, id="bad")
    scheduler.start()
    try:
        support.wait_for(lambda: len(finished(tracker, job_id="ok")) >= 5)
    finally:
        scheduler.shutdown(wait=True)
    tracker.flush()
    rows = tracker.executions(limit=1000)
    assert [r.scheduled_at for r in rows] == sorted((r.scheduled_at for r in rows), reverse=True)
    assert {r.job_id for r in tracker.executions(job_id="ok")} == {"ok"}
    assert {r.status for r in tracker.executions(status="failed")} == {Status.FAILED}
    assert len(tracker.executions(limit=3)) == 3
    middle = rows[len(rows) // 2].scheduled_at
    assert all(r.scheduled_at >= middle for r in tracker.executions(since=middle, limit=1000))
    assert all(r.scheduled_at < middle for r in tracker.executions(until=middle, limit=1000))
    assert tracker.executions(since=start + timedelta(days=1)) == []
    assert tracker.execution(rows[0].run_id) == rows[0]
    with pytest.raises(ValueError, match="unknown status"):
        tracker.executions(status="exploded")
    with pytest.raises(ValueError, match="timezone-aware"):
        tracker.executions(since=datetime.now())


def test_removed_job_keeps_its_history(tracker) -> None:
    """Removing a job from the scheduler does not remove its recorded runs."""
    scheduler = background()
    tracker.instrument(scheduler)
    scheduler.add_job(support.ok_job, "interval", seconds=0.05, id="ephemeral")
    scheduler.start()
    try:
        support.wait_for(lambda: finished(tracker, job_id="ephemeral"))
        scheduler.remove_job("ephemeral")
    finally:
        scheduler.shutdown(wait=True)
    assert finished(tracker, job_id="ephemeral")


def test_finished_one_shot_job_is_announced_removed_not_paused(tracker) -> None:
    """A date job's last word to sinks is `removed` (APScheduler announces it before the run)."""
    sink = JobStates()
    tracker.add_sink(sink)
    scheduler = background()
    tracker.instrument(scheduler)
    scheduler.add_job(support.ok_job, "date", run_date=datetime.now(UTC), id="once")
    scheduler.start()
    try:
        support.wait_for(lambda: finished(tracker, job_id="once"))
        tracker.flush()
    finally:
        scheduler.shutdown()
    states = [s for s in sink.states if s.job_id == "once"]
    assert states[-1].removed and not states[-1].paused
    assert not any(s.paused for s in states)  # never announced as paused on its way out


def test_a_job_removed_and_added_again_stays_known(tracker) -> None:
    """A job removed and added again under the same id, many times over, ends known and
    announced present; removing it then announces it removed."""
    sink = JobStates()
    tracker.add_sink(sink)
    scheduler = background()
    inst = tracker.instrument(scheduler)
    scheduler.start()
    try:
        for round_ in range(20):
            scheduler.add_job(support.ok_job, "interval", hours=1, id="again", name=f"v{round_}")
            scheduler.remove_job("again")
        scheduler.add_job(support.ok_job, "interval", hours=1, id="again", name="final")
        assert tracker.flush(5)
        assert inst.registry.jobs["again"].name == "final"
        last = [s for s in sink.states if s.job_id == "again"][-1]
        assert not last.removed and last.job_name == "final"
        scheduler.remove_job("again")
        assert tracker.flush(5)
        assert "again" not in inst.registry.jobs
        assert [s for s in sink.states if s.job_id == "again"][-1].removed
    finally:
        scheduler.shutdown()


def test_undecorated_jobs_added_later_are_recorded(tracker) -> None:
    """A scheduler whose jobs are all decorated doesn't ask APScheduler for outcome events;
    undecorated one-shot jobs added while it runs (removed before their run ends) are still
    recorded with their outcome, and so are the decorated jobs' runs."""
    scheduler = background()
    tracker.instrument(scheduler)
    scheduler.add_job(support.failing_job, "interval", seconds=0.05, id="decorated")
    scheduler.start()
    try:
        support.wait_for(lambda: finished(tracker, job_id="decorated"))
        now = datetime.now(UTC)
        scheduler.add_job(support.plain_job, "date", run_date=now, id="plain-once")
        scheduler.add_job(support.plain_failing_job, "date", run_date=now, id="plain-bad-once")
        support.wait_for(
            lambda: (
                finished(tracker, job_id="plain-once")
                and finished(tracker, job_id="plain-bad-once")
            )
        )
    finally:
        scheduler.shutdown(wait=True)
    assert {r.status for r in finished(tracker, job_id="decorated")} == {Status.FAILED}
    assert [r.status for r in finished(tracker, job_id="plain-once")] == [Status.SUCCEEDED]
    (bad,) = finished(tracker, job_id="plain-bad-once")
    assert bad.status is Status.FAILED and bad.error_type
    assert all(r.is_finished for r in tracker.executions(limit=1000))


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _plain_unprintable_job() -> None:
    raise _Unprintable()


def _deep(n: int) -> None:
    if n == 0:
        try:
            raise KeyError("the cause")
        except KeyError as cause:
            raise ValueError("deep") from cause
    _deeper(n - 1)


def _deeper(n: int) -> None:  # two functions: Python does not fold their repeated lines
    _deep(n)


def _plain_deep_failing_job() -> None:
    _deep(250)


@tracked_job
def _decorated_unprintable_job() -> None:
    raise _Unprintable()


def _one_row_each(tracker, plain, decorated) -> list[Execution]:
    """Run an undecorated and a decorated one-shot job at once on a BackgroundScheduler (which
    must go on running); the one finished row of each."""
    scheduler = background()
    tracker.instrument(scheduler)
    now = datetime.now(UTC)
    scheduler.add_job(plain, "date", run_date=now, id="plain")
    scheduler.add_job(decorated, "date", run_date=now, id="decorated")
    scheduler.start()
    try:
        (one,), (other,) = support.wait_for(
            lambda: (
                (finished(tracker, job_id="plain"), finished(tracker, job_id="decorated"))
                if finished(tracker, job_id="plain") and finished(tracker, job_id="decorated")
                else None
            )
        )
        assert scheduler.running
    finally:
        scheduler.shutdown(wait=True)
    return [one, other]


def test_failures_no_text_can_be_made_of_are_still_recorded_failed(tracker) -> None:
    """An exception whose ``__str__`` raises, in a decorated or an undecorated job: one
    ``failed`` row with its qualified type, a stand-in message and its traceback (an
    undecorated one used to stay ``running`` until shutdown, then ``interrupted``)."""
    rows = _one_row_each(tracker, _plain_unprintable_job, _decorated_unprintable_job)
    for row in rows:
        assert row.status is Status.FAILED
        assert row.error_type == f"{__name__}._Unprintable"
        assert row.error_message == "<exception str() failed>"
        assert row.traceback and "_Unprintable: <exception str() failed>" in row.traceback
    assert tracker.stats().live_runs == 0


def _plain_exiting_job() -> None:
    sys.exit(3)


@tracked_job
def _decorated_exiting_job() -> None:
    sys.exit(3)


def test_a_job_that_calls_sys_exit_is_failed_not_interrupted(tracker) -> None:
    """A job ported from a script that ends with ``sys.exit(3)`` on error: APScheduler catches
    the ``SystemExit`` and the service goes on, so the run is ``failed`` (it counts, and
    alerts, as a failure), decorated or not. Called directly, where it does stop the caller,
    the run is ``interrupted`` and the ``SystemExit`` reaches the caller unchanged."""
    rows = _one_row_each(tracker, _plain_exiting_job, _decorated_exiting_job)
    assert [(r.status, r.error_type, r.error_message) for r in rows] == [
        (Status.FAILED, "SystemExit", "3")
    ] * 2
    with pytest.raises(SystemExit) as exited:
        _decorated_exiting_job()
    assert exited.value.code == 3
    (direct,) = [r for r in finished(tracker) if r.origin is Origin.DIRECT]
    assert direct.status is Status.INTERRUPTED
    assert direct.error_type == "SystemExit"


def test_an_undecorated_jobs_traceback_is_bounded_and_ends_with_its_exception(tracker) -> None:
    """APScheduler hands undecorated jobs' failures over as the frames' text alone: the row
    keeps the whole formatted exception (its line, its cause), cut to 16,000 characters
    around the middle as decorated jobs' are, not 60,000 characters of frames."""
    scheduler = background()
    tracker.instrument(scheduler)
    scheduler.add_job(_plain_deep_failing_job, "date", run_date=datetime.now(UTC), id="deep")
    scheduler.start()
    try:
        (row,) = support.wait_for(lambda: finished(tracker, job_id="deep"))
    finally:
        scheduler.shutdown(wait=True)
    assert row.status is Status.FAILED and row.error_type == "ValueError"
    assert len(row.traceback) <= 16_000
    assert "characters cut" in row.traceback
    assert "KeyError: 'the cause'" in row.traceback
    assert row.traceback.rstrip().endswith("ValueError: deep")


class _Service:
    @tracked_job
    def refresh(self) -> str:
        return "refreshed"

    @classmethod
    @tracked_job
    def cleanup(cls) -> str:
        return "cleaned"


def test_a_decorated_method_scheduled_as_a_bound_method_is_recorded_as_its_job(tracker) -> None:
    """``scheduler.add_job(service.refresh, ...)`` with a decorated method (or classmethod):
    each run is the job's own, scheduled, with its fire time (it used to be recorded as a
    direct call under the method's name, the job having no history)."""
    scheduler = background()
    tracker.instrument(scheduler)
    now = datetime.now(UTC)
    scheduler.add_job(_Service().refresh, "date", run_date=now, id="refresh")
    scheduler.add_job(_Service.cleanup, "date", run_date=now, id="cleanup")
    scheduler.start()
    try:
        support.wait_for(
            lambda: finished(tracker, job_id="refresh") and finished(tracker, job_id="cleanup")
        )
    finally:
        scheduler.shutdown(wait=True)
    rows = tracker.executions()
    assert sorted((r.job_id, r.origin, r.status) for r in rows) == [
        ("cleanup", Origin.SCHEDULED, Status.SUCCEEDED),
        ("refresh", Origin.SCHEDULED, Status.SUCCEEDED),
    ]
    assert all(r.scheduled_at == now for r in rows)


@tracked_job
def _walk(depth: int = 3) -> int:
    return 0 if depth == 0 else 1 + _walk(depth - 1)


def test_a_job_that_calls_itself_is_one_run(tracker) -> None:
    """Recursion in a tracked job, scheduled or called directly: the inner calls are part of
    the run (a scheduled one used to give a ``scheduled`` row per level, all with the same fire
    time), and the job gets its result."""
    scheduler = background()
    tracker.instrument(scheduler)
    results: list[int] = []
    scheduler.add_listener(lambda event: results.append(event.retval), EVENT_JOB_EXECUTED)
    scheduler.add_job(_walk, "date", run_date=datetime.now(UTC), id="walk")
    scheduler.start()
    try:
        support.wait_for(lambda: finished(tracker, job_id="walk"))
    finally:
        scheduler.shutdown(wait=True)
    assert _walk(2) == 2
    assert tracker.flush()
    assert results == [3]
    rows = tracker.executions()
    assert sorted((r.job_id, r.origin) for r in rows) == [
        ("_walk", Origin.DIRECT),
        ("walk", Origin.SCHEDULED),
    ]


_SWAP_STARTED = threading.Event()
_SWAP_RELEASE = threading.Event()


def _slow_plain() -> None:
    _SWAP_STARTED.set()
    _SWAP_RELEASE.wait(5)


@tracked_job
def _slow_decorated() -> None:
    _slow_plain()


def _swap_mid_run(tracker, first, replacement) -> Execution:
    """Run ``first`` (one of the slow jobs above) as job ``swapped``; while it runs, put
    ``replacement`` in its place (``replace_existing=True``); let it end. Its one finished
    row, once the scheduler's EXECUTED event for it was handled."""
    _SWAP_STARTED.clear()
    _SWAP_RELEASE.clear()
    scheduler = background()
    tracker.instrument(scheduler)
    executed = threading.Event()  # (listeners are called in order: the tracker's went first)
    scheduler.add_listener(lambda event: executed.set(), EVENT_JOB_EXECUTED)
    scheduler.add_job(first, "date", run_date=datetime.now(UTC), id="swapped")
    scheduler.start()
    try:
        assert _SWAP_STARTED.wait(5)
        later = datetime.now(UTC) + timedelta(hours=1)
        scheduler.add_job(replacement, "date", run_date=later, id="swapped", replace_existing=True)
        _SWAP_RELEASE.set()
        assert executed.wait(5)
        assert tracker.flush(5)
        (row,) = finished(tracker, job_id="swapped")
    finally:
        _SWAP_RELEASE.set()
        scheduler.shutdown(wait=True)
    return row


def test_a_job_replaced_by_a_decorated_one_mid_run_closes_that_run(tracker) -> None:
    """``replace_existing=True`` swaps an undecorated job for a decorated one while a run of
    the old one is going: that run (known from scheduler events) still ends ``succeeded``
    (it used to stay ``running``, then ``interrupted`` at shutdown)."""
    row = _swap_mid_run(tracker, _slow_plain, support.ok_job)
    assert row.status is Status.SUCCEEDED
    assert [r.status for r in tracker.executions(job_id="swapped")] == [Status.SUCCEEDED]


def test_a_decorated_job_replaced_by_a_plain_one_mid_run_is_recorded_once(tracker) -> None:
    """The other way round: a decorated job swapped for an undecorated one while a run of it
    is going. That run is recorded once, from inside (it used to get a second row, from the
    scheduler's EXECUTED event, which the job now in its place is recorded from)."""
    row = _swap_mid_run(tracker, _slow_decorated, support.plain_job)
    assert row.status is Status.SUCCEEDED
    assert [r.status for r in tracker.executions(job_id="swapped")] == [Status.SUCCEEDED]


@tracked_job
async def _async_tracked() -> None:
    support.RUNS.append("async-ran")


async def _async_plain() -> None:
    support.RUNS.append("async-ran")


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_async_job_on_a_thread_pool_is_recorded_failed_and_said_once(tracker, caplog) -> None:
    """An ``async def`` job (decorated or not) on a BackgroundScheduler's thread pool: APScheduler
    calls it without awaiting it, so its code never runs, and reports it executed. Each run is
    recorded ``failed`` with the reason (the undecorated one was recorded ``succeeded``, the
    decorated one not at all), and the mistake is logged once per job."""
    import logging

    support.RUNS.clear()
    scheduler = background()
    tracker.instrument(scheduler)
    now = datetime.now(UTC)
    scheduler.add_job(_async_tracked, "date", run_date=now, id="tracked")
    scheduler.add_job(_async_plain, "interval", seconds=0.1, id="plain")
    with caplog.at_level(logging.ERROR, logger="tracker.apscheduler"):
        scheduler.start()
        try:
            support.wait_for(
                lambda: (
                    finished(tracker, job_id="tracked")
                    and len(finished(tracker, job_id="plain")) >= 2
                )
            )
        finally:
            scheduler.shutdown(wait=True)
    rows = finished(tracker, job_id="tracked") + finished(tracker, job_id="plain")
    assert {r.status for r in rows} == {Status.FAILED}
    assert all(r.error_type and r.error_type.endswith("CoroutineNeverAwaited") for r in rows)
    assert support.RUNS == []  # the job's code never ran
    said = [r.getMessage() for r in caplog.records if "without awaiting it" in r.getMessage()]
    assert sorted(m.split("'")[1] for m in said) == ["plain", "tracked"]
