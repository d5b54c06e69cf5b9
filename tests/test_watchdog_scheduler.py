"""The watchdog's scheduler side: overdue fire times become missed; vanished jobs are reported."""

# ruff: noqa: F811 - pytest fixtures imported from test_alert_receivers are parameters here

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import (
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from conftest import need
from sqlalchemy import create_engine, text
from support import ok_job, wait_for
from test_alert_receivers import Receiver, make_receiver, receiver  # noqa: F401 - fixtures
from test_watchdog import Capture, make

from tracker import (
    AlertConfig,
    Execution,
    JobVanished,
    Status,
    Tracker,
    TrackerSettings,
    WatchdogSettings,
    WebhookChannel,
)
from tracker._hub import Hub
from tracker.integrations.apscheduler import SchedulerInstrumentation
from tracker.integrations.apscheduler.watchdog import SchedulerWatch

BERLIN = ZoneInfo("Europe/Berlin")


def noop() -> None:
    return None


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def hub(capture: Capture) -> Iterator[Hub]:
    """A hub feeding only the capture sink (no database): for trigger simulations."""
    h = Hub([capture], interval=0.01)
    yield h
    h.close(2)


def missed(capture: Capture, job_id: str) -> list[Execution]:
    return [e for e in capture.finished(job_id) if e.status is Status.MISSED]


def test_a_blocked_scheduler_reports_missed_once(
    database_url: str, capture: Capture, receiver: Receiver
) -> None:
    """Fire times passing while the scheduler is blocked are recorded missed once and alerted."""
    tracker = make(
        database_url,
        capture,
        watchdog=WatchdogSettings(interval=0.05, grace=0.3),
        alerts=AlertConfig(channels=[WebhookChannel(receiver.url)], backoff=0.02),
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.add_job(
        ok_job, "interval", seconds=0.2, id="tick", coalesce=False, misfire_grace_time=1
    )
    scheduler.start()
    try:
        wait_for(lambda: capture.finished("tick"))
        with scheduler._jobstores_lock:  # the scheduler's loop can't process jobs meanwhile
            first = wait_for(lambda: missed(capture, "tick"))[0]
            assert first.error_type == "tracker.Overdue"
            assert receiver.wait_for(1)[0].json()["kind"] == "missed"
        wait_for(
            lambda: [
                e
                for e in capture.finished("tick")
                if e.status is Status.SUCCEEDED and e.scheduled_at > first.scheduled_at
            ]
        )
    finally:
        scheduler.shutdown(wait=True)
    assert tracker.flush(5)
    times = [e.scheduled_at for e in missed(capture, "tick")]
    assert len(times) == len(set(times))  # APScheduler's own MISSED events were not recorded again
    stored = tracker.executions("tick", status="missed", limit=1000)
    assert sorted(e.scheduled_at for e in stored) == sorted(times)
    assert tracker.alerts is not None and tracker.alerts.wait_delivered(5)
    assert [b["kind"] for b in receiver.bodies()] == ["missed", "recovered"]
    tracker.close()


def test_apschedulers_missed_event_after_the_watchdog_is_dropped(
    hub: Hub, capture: Capture
) -> None:
    """When the scheduler later reports the same fire time missed, it is not recorded twice."""
    scheduler = BackgroundScheduler(timezone="UTC")
    inst = SchedulerInstrumentation(scheduler, hub)
    watch = SchedulerWatch(inst, WatchdogSettings(grace=1), start_thread=False)
    due = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    job = Job(
        scheduler,
        id="j",
        func=noop,
        trigger=CronTrigger(minute="*", timezone=UTC),
        executor="default",
        args=(),
        kwargs={},
        name="j",
        misfire_grace_time=1,
        coalesce=False,
        max_instances=1,
        next_run_time=due,
    )
    inst._learn(job)
    try:
        (record,) = watch.record_overdue(due + timedelta(seconds=5))
        assert record.scheduled_at == due
        inst._on_event(JobExecutionEvent(EVENT_JOB_MISSED, "j", "default", due))
        later = due + timedelta(minutes=1)
        inst._on_event(JobExecutionEvent(EVENT_JOB_MISSED, "j", "default", later))
        assert hub.flush(5)
        assert sorted(e.scheduled_at for e in missed(capture, "j")) == [due, later]
    finally:
        watch.close()


def simulate(
    inst: SchedulerInstrumentation,
    watch: SchedulerWatch,
    job: Job,
    start: datetime,
    end: datetime,
    blocked: tuple[datetime, datetime] | None = None,
    coalesce: bool = False,
) -> list[datetime]:
    """Run a scheduler's clock from ``start`` to ``end`` (UTC), checking every minute.

    The scheduler submits each fire time the moment it is due, as APScheduler does
    (``job._get_run_times`` and the trigger's next fire time), except while ``blocked``;
    with ``coalesce``, only the last of those due at once. Returns the fire times submitted.
    """
    fired: list[datetime] = []
    now = start
    while now <= end:
        stuck = blocked is not None and blocked[0] <= now < blocked[1]
        if not stuck and job.next_run_time is not None and job.next_run_time <= now:
            run_times = job._get_run_times(now)
            run_times = run_times[-1:] if coalesce else run_times
            inst._on_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, job.id, "default", run_times))
            job._modify(next_run_time=job.trigger.get_next_fire_time(run_times[-1], now))
            fired += [t.astimezone(UTC) for t in run_times]
        watch.record_overdue(now, since=start)
        now += timedelta(minutes=1)
    return fired


def scheduled_job(
    scheduler: Any, job_id: str, trigger: Any, start: datetime, coalesce: bool
) -> Job:
    """A job of ``noop`` on ``trigger``, due first at its first fire time from ``start``."""
    return Job(
        scheduler,
        id=job_id,
        func=noop,
        trigger=trigger,
        executor="default",
        args=(),
        kwargs={},
        name=job_id,
        misfire_grace_time=1,
        coalesce=coalesce,
        max_instances=1,
        next_run_time=trigger.get_next_fire_time(None, start),
    )


def cron_job(scheduler: Any, start: datetime, **fields: Any) -> Job:
    trigger = CronTrigger(timezone=BERLIN, **fields)
    return scheduled_job(scheduler, "nightly", trigger, start, coalesce=False)


@pytest.mark.parametrize(
    ("fields", "day", "expected"),
    [
        # 02:30 Berlin exists twice on 2026-10-25 (CEST, then CET): APScheduler fires both.
        (
            {"hour": 2, "minute": 30},
            datetime(2026, 10, 24, 12, tzinfo=UTC),
            ["2026-10-25T00:30", "2026-10-25T01:30", "2026-10-26T01:30"],
        ),
        # 02:30 Berlin does not exist on 2026-03-29: the trigger fires at 01:30 UTC instead.
        (
            {"hour": 2, "minute": 30},
            datetime(2026, 3, 28, 12, tzinfo=UTC),
            ["2026-03-29T01:30", "2026-03-30T00:30"],
        ),
        (
            {"minute": "*/30", "hour": "1-3"},
            datetime(2026, 10, 24, 12, tzinfo=UTC),
            [
                "2026-10-24T23:00",
                "2026-10-24T23:30",
                "2026-10-25T00:00",
                "2026-10-25T00:30",
                "2026-10-25T01:00",
                "2026-10-25T01:30",
                "2026-10-25T02:00",
                "2026-10-25T02:30",
                "2026-10-26T00:00",
                "2026-10-26T00:30",
                "2026-10-26T01:00",
                "2026-10-26T01:30",
                "2026-10-26T02:00",
                "2026-10-26T02:30",
            ],
        ),
    ],
    ids=["autumn-daily", "spring-daily", "autumn-half-hourly"],
)
def test_dst_changes_raise_no_false_alarm(
    hub: Hub, capture: Capture, fields: dict[str, Any], day: datetime, expected: list[str]
) -> None:
    """A cron job in Europe/Berlin across a DST switch is never reported missed when it fires."""
    scheduler = BackgroundScheduler(timezone=BERLIN)
    inst = SchedulerInstrumentation(scheduler, hub)
    watch = SchedulerWatch(inst, WatchdogSettings(grace=60), start_thread=False)
    job = cron_job(scheduler, day, **fields)
    inst._learn(job)
    try:
        fired = simulate(inst, watch, job, day, day + timedelta(days=2))
        assert hub.flush(5)
    finally:
        watch.close()
    assert [t.strftime("%Y-%m-%dT%H:%M") for t in fired] == expected
    assert missed(capture, "nightly") == []


def test_a_stall_across_the_dst_night_reports_both_fire_times(hub: Hub, capture: Capture) -> None:
    """If the scheduler stalls through the repeated 02:30, both fire times are reported missed."""
    day = datetime(2026, 10, 24, 12, tzinfo=UTC)
    scheduler = BackgroundScheduler(timezone=BERLIN)
    inst = SchedulerInstrumentation(scheduler, hub)
    watch = SchedulerWatch(inst, WatchdogSettings(grace=60), start_thread=False)
    job = cron_job(scheduler, day, hour=2, minute=30)
    inst._learn(job)
    blocked = (datetime(2026, 10, 25, 0, tzinfo=UTC), datetime(2026, 10, 25, 3, tzinfo=UTC))
    try:
        simulate(inst, watch, job, day, day + timedelta(days=2), blocked=blocked)
        assert hub.flush(5)
    finally:
        watch.close()
    times = [e.scheduled_at.strftime("%Y-%m-%dT%H:%M") for e in missed(capture, "nightly")]
    assert times == ["2026-10-25T00:30", "2026-10-25T01:30"]


def jittered_job(scheduler: Any, start: datetime, kind: str) -> Job:
    """An hourly job whose fire times APScheduler delays by up to 20 minutes at random."""
    if kind == "cron":
        trigger: Any = CronTrigger(minute=0, timezone=UTC, jitter=1200)
    else:
        trigger = IntervalTrigger(hours=1, start_date=start, timezone=UTC, jitter=1200)
    return scheduled_job(scheduler, "hourly", trigger, start, coalesce=True)


@pytest.mark.parametrize("kind", ["cron", "interval"])
def test_a_job_with_jitter_that_runs_every_fire_time_is_never_missed(
    hub: Hub, capture: Capture, kind: str
) -> None:
    """APScheduler draws a random delay for each fire time of a job with ``jitter``: the
    tracker's expectations leave the jitter out and allow it, instead of drawing delays of
    their own (which called fire times coalesced away, or overdue, though every one ran)."""
    day = datetime(2026, 11, 23, 0, 10, tzinfo=UTC)
    scheduler = BackgroundScheduler(timezone=UTC)
    inst = SchedulerInstrumentation(scheduler, hub)
    watch = SchedulerWatch(inst, WatchdogSettings(grace=60), start_thread=False)
    job = jittered_job(scheduler, day, kind)
    inst._learn(job)
    try:
        fired = simulate(inst, watch, job, day, day + timedelta(days=2), coalesce=True)
        assert hub.flush(5)
    finally:
        watch.close()
    assert len(fired) >= 40  # (an interval trigger's jitter adds up: fewer than 48)
    assert missed(capture, "hourly") == []


def test_fire_times_of_a_job_with_jitter_dropped_by_coalescing_are_counted(
    hub: Hub, capture: Capture
) -> None:
    """The fire times a stalled scheduler coalesced away are still counted with jitter."""
    day = datetime(2026, 11, 23, 0, 10, tzinfo=UTC)
    scheduler = BackgroundScheduler(timezone=UTC)
    inst = SchedulerInstrumentation(scheduler, hub)
    # (a grace longer than the stall: the count comes from coalescing, not the watchdog)
    watch = SchedulerWatch(inst, WatchdogSettings(grace=6 * 3600), start_thread=False)
    job = jittered_job(scheduler, day, "cron")
    inst._learn(job)
    blocked = (datetime(2026, 11, 23, 5, 30, tzinfo=UTC), datetime(2026, 11, 23, 8, 30, tzinfo=UTC))
    try:
        fired = simulate(inst, watch, job, day, day + timedelta(days=1), blocked, coalesce=True)
        assert hub.flush(5)
    finally:
        watch.close()
    # 06:xx and 07:xx were dropped: 08:xx (due by 08:20) ran when the scheduler woke at 08:30.
    assert [t.hour for t in fired if 5 <= t.hour <= 9] == [5, 8, 9]
    (record,) = missed(capture, "hourly")
    assert record.coalesced == 2
    assert record.scheduled_at == datetime(2026, 11, 23, 6, tzinfo=UTC)


def test_paused_jobs_and_schedulers_are_never_overdue(hub: Hub, capture: Capture) -> None:
    """A paused job, or a paused scheduler, produces no missed records however late it is."""
    scheduler = BackgroundScheduler(timezone="UTC")
    inst = SchedulerInstrumentation(scheduler, hub)
    watch = SchedulerWatch(inst, WatchdogSettings(grace=0), start_thread=False)
    scheduler.start(paused=True)
    try:
        scheduler.add_job(noop, "interval", seconds=1, id="paused-job")
        scheduler.add_job(noop, "interval", seconds=1, id="running-job")
        scheduler.pause_job("paused-job")
        later = datetime.now(UTC) + timedelta(hours=1)
        watch.check(later)  # the scheduler is paused: nothing is due
        assert watch.running_since is None
        scheduler.resume()
        scheduler.pause()
        records = watch.record_overdue(later)
        assert [r.job_id for r in records] == ["running-job"]  # the paused job never
    finally:
        watch.close()
        scheduler.shutdown(wait=False)


# -- vanished jobs -----------------------------------------------------------------------


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"


def corrupt(store_url: str, job_id: str, change: Callable[[dict[str, Any]], None]) -> None:
    engine = create_engine(store_url)
    with engine.begin() as conn:
        blob = conn.execute(
            text("SELECT job_state FROM apscheduler_jobs WHERE id = :i"), {"i": job_id}
        ).scalar_one()
        state = pickle.loads(blob)
        change(state)
        conn.execute(
            text("UPDATE apscheduler_jobs SET job_state = :s WHERE id = :i"),
            {"s": pickle.dumps(state), "i": job_id},
        )
    engine.dispose()


def test_a_job_the_store_cannot_restore_is_reported(
    sqlite_url: str, store_url: str, capture: Capture, receiver: Receiver
) -> None:
    """A job store that drops a job it can't restore (at start) triggers a vanished alert."""
    first = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=store_url)}, timezone="UTC"
    )
    first.add_job(ok_job, "interval", hours=1, id="report", name="report")
    first.add_job(ok_job, "interval", hours=1, id="kept")
    first.start(paused=True)
    first.shutdown(wait=False)
    corrupt(store_url, "report", lambda state: state.update(func="support:no_such_function"))

    tracker = make(
        sqlite_url,
        capture,
        watchdog=WatchdogSettings(interval=0.05),
        alerts=AlertConfig(channels=[WebhookChannel(receiver.url)], backoff=0.02),
    )
    second = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=store_url)}, timezone="UTC"
    )
    tracker.instrument(second)
    second.start()
    try:
        (notice,) = wait_for(lambda: capture.of(JobVanished))
        (request,) = receiver.wait_for(1)
    finally:
        second.shutdown(wait=False)
        tracker.close()
    assert notice.job_id == "report"
    assert "could not restore it" in notice.reason
    alert = request.json()
    assert alert["kind"] == "vanished" and alert["severity"] == "critical"
    assert alert["state"] == "gone" and "could not restore" in alert["detail"]


def test_a_job_deleted_behind_the_schedulers_back_is_reported(
    sqlite_url: str, store_url: str, capture: Capture
) -> None:
    """Comparing known jobs with the store finds a job removed without the scheduler."""
    tracker = make(
        sqlite_url, capture, watchdog=WatchdogSettings(interval=0.05, vanish_interval=0.1)
    )
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=store_url)}, timezone="UTC"
    )
    inst = tracker.instrument(scheduler)
    scheduler.add_job(ok_job, "interval", hours=1, id="sync")
    scheduler.add_job(ok_job, "interval", hours=1, id="cleanup")
    scheduler.start()
    try:
        scheduler.remove_job("cleanup")  # through the scheduler: not vanished
        engine = create_engine(store_url)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM apscheduler_jobs WHERE id = 'sync'"))
        engine.dispose()
        (notice,) = wait_for(lambda: capture.of(JobVanished))
        assert "sync" not in inst.registry.jobs
    finally:
        scheduler.shutdown(wait=False)
        tracker.close()
    assert notice.job_id == "sync" and "not removed through the scheduler" in notice.reason
    assert len(capture.of(JobVanished)) == 1


class _StoreThatBlocksOnce(MemoryJobStore):
    """A job store whose ``update_job`` takes 1.5 s once asked to, as a locked SQL job store
    would: APScheduler has started the run, and announces the submission only after it."""

    def __init__(self) -> None:
        super().__init__()
        self.block = threading.Event()

    def update_job(self, job: Job) -> None:
        if self.block.is_set():
            self.block.clear()
            time.sleep(1.5)
        super().update_job(job)


def _plain_tick() -> None:
    return None


@pytest.mark.parametrize("func", [ok_job, _plain_tick], ids=["decorated", "undecorated"])
def test_a_job_store_that_blocks_the_scheduler_counts_each_fire_time_once(
    database_url: str, func: Callable[[], object]
) -> None:
    """The run of the fire time the scheduler was storing is not also called missed, and the
    fire times the watchdog recorded missed are not counted again in the coalesced record
    that follows: every fire time is one row's (they used to count twice)."""
    store = _StoreThatBlocksOnce()
    tracker = Tracker(
        database_url,
        settings=TrackerSettings(flush_interval=0.02),
        metrics=False,
        watchdog=WatchdogSettings(interval=0.05, grace=0.3),
    )
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    tracker.instrument(scheduler)
    # (misfire_grace_time=1: with None the watchdog would leave the late fire times to
    # the scheduler; 1 s is within the store's block, so it records some of them missed)
    scheduler.add_job(func, "interval", seconds=0.2, id="tick", misfire_grace_time=1)
    scheduler.start()
    try:
        wait_for(lambda: len(tracker.executions("tick")) >= 2)
        store.block.set()
        wait_for(lambda: tracker.executions("tick", status="missed"))
        wait_for(lambda: not store.block.is_set())
        time.sleep(2.0)  # the block, and a few runs after it
    finally:
        scheduler.shutdown(wait=True)
    assert tracker.flush(5)
    rows = sorted(tracker.executions("tick", limit=1000), key=lambda e: e.scheduled_at)
    tracker.close()
    times = [e.scheduled_at for e in rows]
    assert len(times) == len(set(times)), [(e.scheduled_at, e.status) for e in rows]
    covered = sum(e.coalesced or 1 for e in rows)
    span = round((times[-1] - times[0]).total_seconds() / 0.2) + 1
    assert covered == span, [(e.scheduled_at, e.status, e.coalesced) for e in rows]
    assert {e.status for e in rows} == {Status.SUCCEEDED, Status.MISSED}
    assert any(e.error_type == "tracker.Overdue" for e in rows)  # the watchdog's, then coalesced


def test_a_job_with_jitter_on_a_real_scheduler_gets_no_missed_rows(
    sqlite_url: str, capture: Capture
) -> None:
    """Every fire time of a jittered job runs: no row but succeeded ones (each run used to
    be followed by a false coalesced ``missed`` row about half the time)."""
    tracker = make(sqlite_url, capture, watchdog=WatchdogSettings(interval=0.02, grace=0.05))
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.add_job(
        ok_job, "interval", seconds=0.1, jitter=0.05, id="poll", coalesce=True, misfire_grace_time=1
    )
    scheduler.start()
    try:
        wait_for(lambda: len(capture.finished("poll")) >= 12)
    finally:
        scheduler.shutdown(wait=True)
        tracker.close()
    assert {e.status for e in capture.finished("poll")} == {Status.SUCCEEDED}


def test_with_misfire_grace_time_none_a_late_fire_time_is_one_row(
    sqlite_url: str, capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    """``misfire_grace_time=None``: APScheduler runs a fire time however late, so the watchdog
    does not call it missed (it used to, and the late run then gave the fire time a second
    row). It says once, in the log, that the job is overdue."""
    tracker = make(sqlite_url, capture, watchdog=WatchdogSettings(interval=0.05, grace=0.2))
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.add_job(
        ok_job, "interval", seconds=0.1, id="late", coalesce=False, misfire_grace_time=None
    )
    scheduler.start()
    try:
        wait_for(lambda: capture.finished("late"))
        with caplog.at_level(logging.WARNING, logger="tracker.watchdog"):
            with scheduler._jobstores_lock:  # the scheduler's loop can't process jobs meanwhile
                # (the warning; or, as it used to, a missed row)
                wait_for(lambda: "is overdue" in caplog.text or missed(capture, "late"))
                time.sleep(0.4)  # more looks of the watchdog at the same overdue fire times
            blocked_until = datetime.now(UTC)
            wait_for(
                lambda: [e for e in capture.finished("late") if e.scheduled_at > blocked_until]
            )
    finally:
        scheduler.shutdown(wait=True)
        tracker.close()
    rows = sorted(capture.finished("late"), key=lambda e: e.scheduled_at)
    assert missed(capture, "late") == [], [(e.scheduled_at, e.status) for e in rows]
    times = [e.scheduled_at for e in rows]
    assert len(times) == len(set(times))  # one row per fire time
    assert round((times[-1] - times[0]).total_seconds() / 0.1) + 1 == len(times)  # and each has one
    # (the burst of late runs may make the scheduler skip a fire time just after it)
    assert {e.status for e in rows} <= {Status.SUCCEEDED, Status.SKIPPED}
    overdue = [r for r in caplog.records if "is overdue" in r.getMessage()]
    assert len(overdue) == 1 and "'late'" in overdue[0].getMessage()


def _store_scheduler(store_url: str) -> BackgroundScheduler:
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=store_url)},
        timezone="UTC",
        job_defaults={"coalesce": True, "misfire_grace_time": 60},
    )


def test_a_standby_that_resumes_counts_no_fire_time_the_active_one_ran(
    sqlite_url: str, store_url: str, capture: Capture
) -> None:
    """Active/standby on one job store: the standby, started paused, learned the job's next
    fire time then. When it resumes after the active one ran the job for a while, it learns
    the store's jobs afresh: the fire times the active one ran are not coalesced away
    (they used to become one ``missed`` row counting them all)."""
    active = _store_scheduler(store_url)
    active.add_job(noop, "interval", seconds=0.1, id="shared")
    ran = threading.Semaphore(0)
    active.add_listener(lambda event: ran.release(), EVENT_JOB_EXECUTED)
    active.start(paused=True)
    tracker = make(sqlite_url, capture, watchdog=WatchdogSettings(interval=0.05, grace=0.3))
    standby = _store_scheduler(store_url)
    tracker.instrument(standby)
    standby.start(paused=True)
    try:
        active.resume()
        for _ in range(5):
            assert ran.acquire(timeout=5)
        active.shutdown(wait=True)
        standby.resume()
        wait_for(lambda: len(capture.finished("shared")) >= 3)
    finally:
        if active.running:
            active.shutdown(wait=False)
        standby.shutdown(wait=True)
        tracker.close()
    assert missed(capture, "shared") == []
    assert {e.status for e in capture.finished("shared")} == {Status.SUCCEEDED}


def test_a_paused_standby_reports_no_job_as_vanished(
    hub: Hub, capture: Capture, store_url: str
) -> None:
    """A paused scheduler (a standby) does not follow its jobs: one the active scheduler
    removes through itself is not reported vanished, while paused nor once resumed."""
    active = _store_scheduler(store_url)
    active.add_job(noop, "interval", hours=1, id="report")
    active.add_job(noop, "interval", hours=1, id="kept")
    active.start(paused=True)
    standby = _store_scheduler(store_url)
    inst = SchedulerInstrumentation(standby, hub)
    watch = SchedulerWatch(inst, WatchdogSettings(), start_thread=False)
    standby.start(paused=True)
    try:
        assert set(inst.registry.jobs) == {"report", "kept"}
        active.remove_job("report")
        assert watch.check_vanished(confirm=0) == []
        standby.resume()
        assert set(inst.registry.jobs) == {"kept"}  # learned afresh: forgotten, not vanished
        assert watch.check_vanished(confirm=0) == []
        assert hub.flush(5)
    finally:
        watch.close()
        active.shutdown(wait=False)
        standby.shutdown(wait=False)
    assert capture.of(JobVanished) == []


@pytest.fixture
def redis_store() -> Iterator[tuple[Any, str]]:
    """A Redis client and the key prefix of a RedisJobStore's keys, deleted after the test."""
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, db=15, socket_connect_timeout=2)
        client.ping()
    except Exception as exc:
        need(f"Redis not reachable at 127.0.0.1:6379: {exc}")
    prefix = f"tracker-test-{uuid.uuid4().hex[:8]}"
    yield client, prefix
    client.delete(f"{prefix}.jobs", f"{prefix}.run_times")
    client.close()


def test_a_job_the_redis_store_cannot_restore_is_reported_once_under_its_id(
    sqlite_url: str, capture: Capture, redis_store: tuple[Any, str]
) -> None:
    """RedisJobStore logs the id of a job it can't restore as bytes: it is decoded, so the
    notice names the job (it said "b'sync'"), and the job is forgotten (a second notice
    followed, from the comparison with the store)."""
    from apscheduler.jobstores.redis import RedisJobStore

    client, prefix = redis_store
    tracker = make(
        sqlite_url, capture, watchdog=WatchdogSettings(interval=0.05, vanish_interval=0.1)
    )
    store = RedisJobStore(
        host="127.0.0.1", port=6379, db=15, jobs_key=f"{prefix}.jobs",
        run_times_key=f"{prefix}.run_times",
    )  # fmt: skip
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.add_job(ok_job, "interval", hours=1, id="sync")
    scheduler.add_job(ok_job, "interval", hours=1, id="kept")
    scheduler.start()
    try:
        state = pickle.loads(client.hget(f"{prefix}.jobs", "sync"))
        state["func"] = "support:no_such_function"
        client.hset(f"{prefix}.jobs", "sync", pickle.dumps(state))
        (notice,) = wait_for(lambda: capture.of(JobVanished))
        time.sleep(1.0)  # the watchdog compares the jobs with the store a few more times
    finally:
        scheduler.shutdown(wait=False)
        tracker.close()
        store.redis.close()  # (a look at the store during the shutdown may have reconnected)
    assert notice.job_id == "sync" and "could not restore it" in notice.reason
    assert [n.job_id for n in capture.of(JobVanished)] == ["sync"]
