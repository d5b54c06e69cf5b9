"""The watchdog: a run past its max_runtime is reported at the deadline, while it still runs."""

# ruff: noqa: F811 - pytest fixtures imported from test_alert_receivers are parameters here

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from support import wait_for
from test_alert_receivers import Receiver, make_receiver, receiver  # noqa: F401 - fixtures

from tracker import (
    AlertConfig,
    BaseSink,
    Execution,
    RunTimedOut,
    Status,
    Tracker,
    TrackerEvent,
    TrackerSettings,
    WatchdogSettings,
    WebhookChannel,
    current_run,
    tracked_job,
)

GATE = threading.Event()
ENTERED = threading.Event()


@tracked_job(max_runtime=0.3)
def stuck_job() -> str:
    ENTERED.set()
    GATE.wait(20)
    return "done at last"


@tracked_job(max_runtime=0.2)
def stuck_then_failing_job() -> None:
    ENTERED.set()
    GATE.wait(20)
    raise ValueError("gave up")


def plain_stuck_job() -> None:
    ENTERED.set()
    GATE.wait(20)


@tracked_job(max_runtime=0.2)
async def async_stuck_job() -> None:
    await asyncio.sleep(20)


class Capture(BaseSink):
    """A sink that keeps every event it receives."""

    name = "capture"

    def __init__(self) -> None:
        self.events: list[TrackerEvent] = []
        self._lock = threading.Lock()

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        with self._lock:
            self.events.extend(events)

    def of(self, kind: type[Any]) -> list[Any]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]

    def finished(self, job_id: str) -> list[Execution]:
        return [e for e in self.of(Execution) if e.job_id == job_id and e.status.is_terminal]


@pytest.fixture(autouse=True)
def _gates() -> Iterator[None]:
    GATE.clear()
    ENTERED.clear()
    yield
    GATE.set()


@pytest.fixture
def capture() -> Capture:
    return Capture()


def make(url: str, capture: Capture, **options: Any) -> Tracker:
    watchdog = options.pop("watchdog", WatchdogSettings(interval=0.05))
    return Tracker(
        url,
        settings=TrackerSettings(flush_interval=0.02),
        sinks=[capture],
        metrics=False,
        watchdog=watchdog,
        **options,
    )


def test_a_stuck_job_alerts_at_its_deadline(
    database_url: str, capture: Capture, receiver: Receiver
) -> None:
    """A sync job past its max_runtime alerts while it still runs; its row ends timed_out."""
    alerts = AlertConfig(channels=[WebhookChannel(receiver.url)], backoff=0.02)
    tracker = make(database_url, capture, alerts=alerts)
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.add_job(stuck_job, id="stuck")
    scheduler.start()
    try:
        (request,) = receiver.wait_for(1)
        assert not GATE.is_set() and ENTERED.is_set()  # the alert came while the job ran
        alert = request.json()
        assert alert["kind"] == "timed_out" and alert["job"]["id"] == "stuck"
        assert alert["max_runtime"] == 0.3
        assert "still running after its max_runtime of 0.3 s" in alert["summary"]
        assert capture.finished("stuck") == []
        # The notice reaches each sink on its own thread: the webhook may come first.
        (notice,) = wait_for(lambda: capture.of(RunTimedOut))
        assert notice.run.job_id == "stuck" and notice.run.run_id == alert["run"]["id"]
        GATE.set()
        (record,) = wait_for(lambda: capture.finished("stuck"))
    finally:
        GATE.set()
        scheduler.shutdown(wait=True)
        tracker.close()
    assert record.status is Status.TIMED_OUT
    assert record.tags["outcome"] == "succeeded"  # what the job itself did
    assert record.error_type is None and record.duration_s is not None
    assert record.duration_s >= 0.3


def test_a_stuck_job_keeps_its_real_error(sqlite_url: str, capture: Capture) -> None:
    """A run that passes its deadline and then fails is timed_out with its own error kept."""
    tracker = make(sqlite_url, capture)

    def call() -> None:
        with pytest.raises(ValueError, match="gave up"):
            stuck_then_failing_job()

    worker = threading.Thread(target=call)
    worker.start()
    try:
        wait_for(lambda: capture.of(RunTimedOut))
        assert worker.is_alive()
        assert tracker.watchdog is not None and tracker.watchdog.timed_out == 1
        GATE.set()
        worker.join(5)
        (record,) = wait_for(lambda: capture.finished("stuck_then_failing_job"))
    finally:
        GATE.set()
        tracker.close()
    assert record.status is Status.TIMED_OUT
    assert record.error_type == "ValueError" and record.error_message == "gave up"
    assert record.tags["outcome"] == "failed"


def test_default_max_runtime_covers_undecorated_jobs(sqlite_url: str, capture: Capture) -> None:
    """With default_max_runtime, a job with no limit of its own is reported too."""
    tracker = make(
        sqlite_url, capture, watchdog=WatchdogSettings(interval=0.05, default_max_runtime=0.2)
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.add_job(plain_stuck_job, id="plain")
    scheduler.start()
    try:
        (notice,) = wait_for(lambda: capture.of(RunTimedOut))
        assert notice.run.job_id == "plain" and notice.max_runtime == 0.2
        GATE.set()
        (record,) = wait_for(lambda: capture.finished("plain"))
    finally:
        GATE.set()
        scheduler.shutdown(wait=True)
        tracker.close()
    assert record.status is Status.TIMED_OUT and record.tags["outcome"] == "succeeded"


def _loop_in_a_thread() -> asyncio.AbstractEventLoop:
    """An event loop running on a thread of its own (stopped by :func:`_stop_on_its_loop`)."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return loop


def _stop_on_its_loop(scheduler: AsyncIOScheduler) -> None:
    """Shut ``scheduler`` down on its loop's thread, then stop and close that loop."""
    loop = scheduler._eventloop
    loop.call_soon_threadsafe(scheduler.shutdown, False)
    wait_for(lambda: not scheduler.running)
    loop.call_soon_threadsafe(loop.stop)
    wait_for(lambda: not loop.is_running())
    loop.close()


def test_async_jobs_can_be_cancelled_at_the_deadline(sqlite_url: str, capture: Capture) -> None:
    """With cancel_async=True, an async job's task is cancelled when its max_runtime passes."""
    tracker = make(sqlite_url, capture, watchdog=WatchdogSettings(interval=0.05, cancel_async=True))
    scheduler = AsyncIOScheduler(event_loop=_loop_in_a_thread(), timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.add_job(async_stuck_job, id="async-stuck")
    scheduler._eventloop.call_soon_threadsafe(scheduler.start)
    try:
        (record,) = wait_for(lambda: capture.finished("async-stuck"))
        (notice,) = capture.of(RunTimedOut)
    finally:
        _stop_on_its_loop(scheduler)
        tracker.close()
    assert notice.cancelled
    assert record.status is Status.TIMED_OUT
    assert record.error_type is not None and record.error_type.endswith("CancelledError")
    assert "max_runtime of 0.2 s" in (record.error_message or "")
    assert record.tags["outcome"] == "interrupted"


BLOCKED: list[datetime] = []


@tracked_job(max_runtime=0.15)
async def blocks_its_loop_once() -> None:
    """The first run blocks the event loop past its deadline (a sync client called from an
    async job), then ends without awaiting again; later runs await and are quick."""
    run = current_run()
    assert run is not None and run.scheduled_at is not None
    await asyncio.sleep(0.01)
    if not BLOCKED:
        BLOCKED.append(run.scheduled_at)
        time.sleep(0.4)  # noqa: ASYNC251 - blocking the loop is the point
    else:
        await asyncio.sleep(0.02)


def test_a_cancel_never_reaches_the_next_run_in_the_same_task(
    sqlite_url: str, capture: Capture
) -> None:
    """APScheduler runs the fire times due at once one after the other in one task
    (coalesce=False). The first passes its deadline while it blocks the loop, so the
    cancel waits for the loop: by then that run has ended. The next run, healthy, is left
    alone (it used to be cancelled and recorded interrupted)."""
    BLOCKED.clear()
    tracker = make(sqlite_url, capture, watchdog=WatchdogSettings(interval=0.02, cancel_async=True))
    scheduler = AsyncIOScheduler(event_loop=_loop_in_a_thread(), timezone="UTC")
    tracker.instrument(scheduler)
    first = datetime.now(UTC) - timedelta(seconds=0.35)  # four fire times due at the start
    scheduler.add_job(
        blocks_its_loop_once,
        IntervalTrigger(seconds=0.1, start_date=first, timezone=UTC),
        id="burst",
        next_run_time=first,
        coalesce=False,
        max_instances=1,
        misfire_grace_time=60,
    )
    scheduler._eventloop.call_soon_threadsafe(scheduler.start)
    try:
        due = [first + timedelta(seconds=0.1 * k) for k in range(4)]
        wait_for(lambda: {e.scheduled_at for e in capture.finished("burst")} >= set(due))
        (notice,) = capture.of(RunTimedOut)
    finally:
        _stop_on_its_loop(scheduler)
        tracker.close()
    by_time = {e.scheduled_at: e for e in capture.finished("burst")}
    assert [by_time[t].status for t in due] == [
        Status.TIMED_OUT,
        Status.SUCCEEDED,
        Status.SUCCEEDED,
        Status.SUCCEEDED,
    ], [(by_time[t].status, by_time[t].error_message) for t in due]
    assert notice.run.scheduled_at == due[0]
    assert by_time[due[0]].tags["outcome"] == "succeeded"  # it ended before the loop could act


def test_runs_within_their_limit_are_left_alone(sqlite_url: str, capture: Capture) -> None:
    """A run that ends before its deadline is an ordinary success, with no notice."""
    tracker = make(sqlite_url, capture)
    try:
        GATE.set()
        assert stuck_job() == "done at last"
        (record,) = wait_for(lambda: capture.finished("stuck_job"))
    finally:
        tracker.close()
    assert record.status is Status.SUCCEEDED and "outcome" not in record.tags
    assert capture.of(RunTimedOut) == []


def test_the_watchdog_can_be_turned_off(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """watchdog=False, or TRACKER_WATCHDOG_ENABLED=false, runs no watchdog."""
    off = Tracker(sqlite_url, metrics=False, watchdog=False)
    monkeypatch.setenv("TRACKER_WATCHDOG_ENABLED", "false")
    from_env = Tracker(sqlite_url, metrics=False)
    monkeypatch.setenv("TRACKER_WATCHDOG_DEFAULT_MAX_RUNTIME", "600")
    forced = Tracker(sqlite_url, metrics=False, watchdog=True)
    try:
        assert off.watchdog is None and from_env.watchdog is None
        assert forced.watchdog is not None and forced.watchdog.default_max_runtime == 600
    finally:
        for t in (off, from_env, forced):
            t.close()
