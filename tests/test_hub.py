"""The hub: per-run state, any event order, and sinks that can't hurt the job."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
import support

from tracker import BaseSink, Execution, Origin, Status, TrackerEvent
from tracker._hub import Hub


class Collect(BaseSink):
    name = "collect"

    def __init__(self) -> None:
        self.events: list[TrackerEvent] = []

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        self.events.extend(events)

    def records(self) -> list[Execution]:
        return [e for e in self.events if isinstance(e, Execution)]


class Exploding(BaseSink):
    name = "exploding"

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        raise RuntimeError("sink is broken")


class Stuck(BaseSink):
    name = "stuck"

    def __init__(self) -> None:
        self.release = threading.Event()

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        self.release.wait(10)


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_finished_before_submitted_is_one_run() -> None:
    """EXECUTED arriving before SUBMITTED (APScheduler #445) still makes exactly one run."""
    sink = Collect()
    hub = Hub([sink], interval=0.01)
    key = ("job", NOW)
    hub.event_finished(key, job_id="job", job_name="job", scheduled_at=NOW)
    hub.event_started(key, job_id="job", job_name="job", scheduled_at=NOW)
    hub.flush()
    records = sink.records()
    assert [r.status for r in records] == [Status.SUCCEEDED]
    assert hub.live_runs() == []
    hub.close()


def test_overlapping_runs_of_one_job_are_separate() -> None:
    """Two runs of one job in progress at once get their own ids and outcomes."""
    sink = Collect()
    hub = Hub([sink], interval=0.01)
    later = NOW.replace(minute=1)
    hub.event_started(("j", NOW), job_id="j", job_name="j", scheduled_at=NOW)
    hub.event_started(("j", later), job_id="j", job_name="j", scheduled_at=later)
    hub.event_finished(
        ("j", later),
        job_id="j",
        job_name="j",
        scheduled_at=later,
        error=ValueError("x"),
        traceback="tb",
    )
    hub.event_finished(("j", NOW), job_id="j", job_name="j", scheduled_at=NOW)
    hub.flush()
    final = {r.scheduled_at: r for r in sink.records() if r.is_finished}
    assert final[NOW].status is Status.SUCCEEDED
    assert final[later].status is Status.FAILED and final[later].error_type == "ValueError"
    assert final[NOW].run_id != final[later].run_id
    hub.close()


def test_raising_sink_is_counted_logged_and_isolated(caplog) -> None:
    """A sink that raises is counted and logged; other sinks and the job carry on."""
    good = Collect()
    hub = Hub([Exploding(), good], interval=0.01)
    from tracker import _context

    _context.push_default(hub)
    try:
        with caplog.at_level(logging.ERROR, logger="tracker"):
            assert support.ok_job() == "ok"
            assert hub.flush()
    finally:
        _context.remove_default(hub)
    assert hub.stats().sink_errors["exploding"] >= 1
    assert "exploding" in caplog.text and "sink is broken" in caplog.text
    assert [r.status for r in good.records()] == [Status.SUCCEEDED]
    hub.close()


def test_stuck_sink_never_delays_the_job_or_other_sinks() -> None:
    """A sink that hangs backs up only its own queue: runs and other sinks are unaffected."""
    stuck, good = Stuck(), Collect()
    hub = Hub([stuck, good], interval=0.01, queue_capacity=100)
    from tracker import _context

    _context.push_default(hub)
    try:
        for batch in range(1, 21):
            for _ in range(10):
                support.ok_job()
            support.wait_for(lambda n=batch: len(good.records()) == 10 * n)
        assert hub.stats().dropped.get("stuck", 0) > 0  # overflow is counted, not blocking
        assert hub.stats().dropped.get("collect", 0) == 0
    finally:
        _context.remove_default(hub)
        stuck.release.set()
        hub.close(timeout=5)


def test_a_short_run_is_published_once_finished() -> None:
    """A run that ends before ``announce_after`` reaches sinks as one final record."""
    sink = Collect()
    hub = Hub([sink], interval=0.01, announce_after=5.0)
    run = hub.open_run(job_id="j", job_name="j", scheduled_at=NOW)
    hub.close_run(run)
    assert hub.flush()
    assert [(r.run_id, r.status) for r in sink.records()] == [(run.run_id, Status.SUCCEEDED)]
    hub.close()


def test_a_run_still_in_progress_is_announced_as_running() -> None:
    """A run live past ``announce_after`` is published as ``running`` without any flush,
    once, and its final record follows."""
    sink = Collect()
    hub = Hub([sink], interval=0.01, announce_after=0.05)
    run = hub.open_run(job_id="j", job_name="j", scheduled_at=NOW)
    (running,) = support.wait_for(lambda: sink.records())
    assert (running.run_id, running.status) == (run.run_id, Status.RUNNING)
    assert running.started_at == run.started_at and running.finished_at is None
    time.sleep(0.05)  # more announcer rounds: still announced once
    hub.close_run(run, error=ValueError("boom"))
    assert hub.flush()
    assert [r.status for r in sink.records()] == [Status.RUNNING, Status.FAILED]
    hub.close()


def test_flush_publishes_live_runs_as_running() -> None:
    """After ``flush()``, every run in progress is in the sinks, however young."""
    sink = Collect()
    hub = Hub([sink], interval=0.01, announce_after=60.0)
    run = hub.open_run(job_id="j", job_name="j", scheduled_at=NOW)
    assert hub.flush()
    assert [(r.run_id, r.status) for r in sink.records()] == [(run.run_id, Status.RUNNING)]
    hub.close()


@pytest.mark.parametrize("closing", ["close_run", "finish"])
def test_running_never_follows_the_final_record(closing: str) -> None:
    """Runs ending while the announcer publishes them: ``running``, when sent, comes first
    (whether the record is built on the closing thread or queued for the hub's)."""
    sink = Collect()
    hub = Hub([sink], interval=0.0005, announce_after=0.0)
    close = getattr(hub, closing)
    runs = []
    for i in range(3000):
        runs.append(hub.open_run(job_id="j", job_name="j", scheduled_at=NOW))
        if len(runs) > 20:
            close(runs.pop(0))
        if i % 50 == 0:
            time.sleep(0.0005)  # let the announcer in
    for run in runs:
        close(run)
    assert hub.flush()
    seen: dict[str, list[Status]] = {}
    for record in sink.records():
        seen.setdefault(record.run_id, []).append(record.status)
    assert len(seen) == 3000
    assert {tuple(s) for s in seen.values()} <= {
        (Status.SUCCEEDED,),
        (Status.RUNNING, Status.SUCCEEDED),
    }
    assert any(len(s) == 2 for s in seen.values())  # the race was really run
    hub.close()


def test_close_interrupts_runs_still_in_progress() -> None:
    """Runs still open when the hub closes are recorded as interrupted."""
    sink = Collect()
    hub = Hub([sink], interval=0.01)
    run = hub.open_run(job_id="j", job_name="j", scheduled_at=NOW)
    hub.close()
    final = [r for r in sink.records() if r.is_finished]
    assert [(r.run_id, r.status) for r in final] == [(run.run_id, Status.INTERRUPTED)]
    assert hub.close_run(run) is None  # the job returning later changes nothing


def test_finished_runs_reach_sinks_without_a_flush() -> None:
    """A run ended with ``finish()`` (the job's own path) is published by the hub's thread,
    within about one interval, with the status its error gives."""
    sink = Collect()
    hub = Hub([sink], interval=0.01, announce_after=60.0)
    ok = hub.open_run(job_id="ok", job_name="ok", scheduled_at=NOW)
    bad = hub.open_run(job_id="bad", job_name="bad", scheduled_at=NOW)
    hub.finish(ok)
    hub.finish(bad, ValueError("boom"))
    records = support.wait_for(lambda: len(sink.records()) == 2 and sink.records())
    assert {(r.job_id, r.status, r.error_type) for r in records} == {
        ("ok", Status.SUCCEEDED, None),
        ("bad", Status.FAILED, "ValueError"),
    }
    assert hub.stats().pending == 0 and hub.stats().live_runs == 0
    hub.close()


def test_a_stream_of_runs_reaches_the_sinks_while_it_lasts() -> None:
    """Runs ending back to back for a second and a half: the sinks get records within the
    first half second, not only once the stream pauses (the hub hands them over in batches
    as it builds them)."""
    sink = Collect()
    hub = Hub([sink], interval=0.02, announce_after=60.0)
    first_seen: list[float] = []
    started = time.monotonic()

    def watch() -> None:
        support.wait_for(lambda: sink.events, timeout=5, interval=0.005)
        first_seen.append(time.monotonic() - started)

    watcher = threading.Thread(target=watch)
    watcher.start()
    produced = 0
    while time.monotonic() - started < 1.5:
        for _ in range(100):
            hub.finish(hub.begin("j", "j", NOW, Origin.SCHEDULED, None, None, None))
        produced += 100
    watcher.join()
    assert hub.flush(30)
    assert len(sink.records()) == produced
    assert first_seen[0] < 0.5, f"first records after {first_seen[0]:.2f} s"
    hub.close()


class SlowToDescribe(Exception):
    def __str__(self) -> str:
        time.sleep(0.1)  # the record of a run failing with it takes this long to build
        return "slow"


def test_flush_waits_for_records_the_hubs_thread_is_building() -> None:
    """flush() right after a run ended publishes it, even when the hub's thread took it a
    moment before and is still building its record."""
    sink = Collect()
    hub = Hub([sink], interval=0.001, announce_after=60.0)
    try:
        hub.finish(hub.begin("j", "j", NOW, Origin.SCHEDULED, None, None, None), SlowToDescribe())
        support.wait_for(lambda: not hub._finished, timeout=5, interval=0.001)  # taken
        assert hub.flush(5)
        assert [(r.error_type, r.error_message) for r in sink.records()] == [
            (f"{__name__}.SlowToDescribe", "slow")
        ]
    finally:
        hub.close()


def test_a_run_finished_after_close_is_not_recorded_twice() -> None:
    """``close()`` records a live run as interrupted; the job returning afterwards adds nothing."""
    sink = Collect()
    hub = Hub([sink], interval=0.01)
    run = hub.open_run(job_id="j", job_name="j", scheduled_at=NOW)
    hub.close()
    hub.finish(run)
    assert [r.status for r in sink.records()] == [Status.INTERRUPTED]


def test_run_ids_sort_by_start_time() -> None:
    """Run ids are made lazily, from the run's start: they sort in start order whatever the
    order they are asked for in."""
    hub = Hub([], interval=0.01)
    runs = []
    for _ in range(3):
        runs.append(hub.open_run(job_id="j", job_name="j", scheduled_at=None))
        time.sleep(0.002)
    ids = [run.run_id for run in reversed(runs)]
    assert sorted(ids) == ids[::-1]
    assert len(set(ids)) == 3
    assert [run.run_id for run in runs] == ids[::-1]  # made once, kept
    hub.close()


def test_a_fire_time_in_another_time_zone_is_recorded_in_utc() -> None:
    """The scheduler's fire time is kept as given and converted to UTC for the record."""
    sink = Collect()
    hub = Hub([sink], interval=0.01)
    due = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    run = hub.open_run(job_id="j", job_name="j", scheduled_at=due)
    hub.finish(run)
    assert hub.flush()
    (record,) = sink.records()
    assert record.scheduled_at == due and record.scheduled_at.tzinfo is UTC
    assert record.scheduled_at.hour == 10
    hub.close()


def test_lateness_and_duration_are_measured() -> None:
    """Lateness is start minus fire time; duration comes from a monotonic clock."""
    sink = Collect()
    hub = Hub([sink], interval=0.01)
    due = datetime.now(UTC).replace(microsecond=0)
    run = hub.open_run(job_id="j", job_name="j", scheduled_at=due)
    time.sleep(0.05)
    record = hub.close_run(run)
    assert record is not None
    assert record.lateness_s == (record.started_at - due).total_seconds() >= 0
    assert 0.05 <= record.duration_s < 5
    hub.close()


class Hung(BaseSink):
    """A sink whose first batch never returns (until released)."""

    name = "hung"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.events: list[TrackerEvent] = []

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        self.entered.set()
        self.release.wait(30)
        self.events.extend(events)


def test_what_a_hung_sink_never_took_is_counted_dropped_at_close(caplog) -> None:
    """close(timeout) leaves a sink stuck in a call behind; the records still queued for it
    then are lost: counted as dropped and logged, not lost in silence."""
    sink = Hung()
    hub = Hub([sink], interval=0.01)
    hub.close_run(hub.open_run(job_id="first", job_name="first", scheduled_at=NOW))
    assert sink.entered.wait(5)
    for n in range(5):
        hub.close_run(hub.open_run(job_id=f"job{n}", job_name="job", scheduled_at=NOW))
    started = time.monotonic()
    hub.close(timeout=0.3)
    assert time.monotonic() - started < 3.5
    try:
        assert hub.stats().dropped == {"hung": 5}
        assert "did not return within its close timeout; 5 queued records dropped" in caplog.text
    finally:
        sink.release.set()


class Rows(Collect):
    """Takes finished runs as run rows (as the writer process's sink does)."""

    name = "rows"
    run_rows = True


def test_a_sink_added_while_the_hub_builds_run_rows_gets_records() -> None:
    """A sink added (another thread) while the hub's thread is turning finished runs into run
    rows for a sink that takes them gets records, never run rows it cannot read: it used to
    get the rows built for the other sink."""
    rows = Rows()
    hub = Hub([rows], interval=3600)
    late = Collect()
    adding: list[threading.Thread] = []
    build = hub._final_run_row

    def build_while_a_sink_is_added(*args):
        if not adding:
            adding.append(threading.Thread(target=hub.add_sink, args=(late,)))
            adding[0].start()
            adding[0].join(0.3)  # (it waits for the drain: the sinks it drains for are set)
        return build(*args)

    hub._final_run_row = build_while_a_sink_is_added  # type: ignore[method-assign]
    try:
        hub.finish(hub.begin("j", "j", NOW, Origin.SCHEDULED, None, None, None))
        assert hub.flush(10)
        adding[0].join(5)
        hub.finish(hub.begin("k", "k", NOW, Origin.SCHEDULED, None, None, None))
        assert hub.flush(10)
    finally:
        hub.close()
    assert [type(e) for e in late.events] == [Execution]
    assert late.records()[0].job_id == "k"
    assert [type(e) for e in rows.events] == [tuple, Execution]  # rows until it was not alone


def test_the_latest_fire_time_in_a_repeated_hour() -> None:
    """Fire times in the hour a time zone repeats (end of daylight saving time): the later
    instant is the latest, though its wall time is earlier (01:00 EST after 01:45 EDT). The
    watchdog asks this before calling a fire time missed."""
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 45, tzinfo=ny)  # EDT, 05:45 UTC
    second = datetime(2026, 11, 1, 1, 0, fold=1, tzinfo=ny)  # EST, 06:00 UTC
    for sink in (Rows(), Collect()):
        hub = Hub([sink], interval=3600)
        try:
            for fire_time in (first, second):
                hub.finish(hub.begin("j", "j", fire_time, Origin.SCHEDULED, None, None, None))
            assert hub.flush(10)
            assert hub.latest_fire_time("j") == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
        finally:
            hub.close()


def test_a_timed_out_run_s_row_has_the_id_the_watchdog_named() -> None:
    """With run rows, a run's id is made by the writer process unless it was asked for: a run
    the watchdog timed out (and named in its notice and log line) keeps that id in its row.
    A run that ended since the watchdog listed the live runs is not timed out."""
    from tracker import RunTimedOut
    from tracker._plain import from_sent
    from tracker.watchdog import Watchdog

    rows = Rows()
    hub = Hub([rows], interval=3600)
    watchdog = Watchdog(hub)
    try:
        slow = hub.begin("slow", "slow", NOW, Origin.SCHEDULED, None, 0.01, None)
        ended = hub.begin("ended", "ended", NOW, Origin.SCHEDULED, None, 0.01, None)
        listed = hub.live_runs()
        hub.finish(ended)
        hub.live_runs = lambda: listed  # type: ignore[method-assign]  # taken before it ended
        time.sleep(0.05)
        watchdog.check_runs()
        hub.finish(slow)
        assert hub.flush(10)
    finally:
        hub.close()
    notices = [e for e in rows.events if isinstance(e, RunTimedOut)]
    assert [n.run.job_id for n in notices] == ["slow"]
    records = {
        r.job_id: r
        for r in (from_sent(e, 1, 1, i) for i, e in enumerate(rows.events) if type(e) is tuple)
    }
    assert records["slow"].status is Status.TIMED_OUT
    assert records["slow"].run_id == notices[0].run.run_id
    assert records["ended"].status is Status.SUCCEEDED
