"""The hub: per-run state, any event order, and sinks that can't hurt the job."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import support

from tracker import BaseSink, Execution, Status, TrackerEvent
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
    assert [r.status for r in records] == [Status.RUNNING, Status.SUCCEEDED]
    assert len({r.run_id for r in records}) == 1
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
    assert [r.status for r in good.records()] == [Status.RUNNING, Status.SUCCEEDED]
    hub.close()


def test_stuck_sink_never_delays_the_job_or_other_sinks() -> None:
    """A sink that hangs backs up only its own queue: runs and other sinks are unaffected."""
    stuck, good = Stuck(), Collect()
    hub = Hub([stuck, good], interval=0.01, queue_capacity=100)
    from tracker import _context

    _context.push_default(hub)
    try:
        for batch in range(1, 11):
            for _ in range(10):
                support.ok_job()
            support.wait_for(lambda n=batch: len(good.records()) == 20 * n)
        assert hub.stats().dropped.get("stuck", 0) > 0  # overflow is counted, not blocking
        assert hub.stats().dropped.get("collect", 0) == 0
    finally:
        _context.remove_default(hub)
        stuck.release.set()
        hub.close(timeout=5)


def test_close_interrupts_runs_still_in_progress() -> None:
    """Runs still open when the hub closes are recorded as interrupted."""
    sink = Collect()
    hub = Hub([sink], interval=0.01)
    run = hub.open_run(job_id="j", job_name="j", scheduled_at=NOW)
    hub.close()
    final = [r for r in sink.records() if r.is_finished]
    assert [(r.run_id, r.status) for r in final] == [(run.run_id, Status.INTERRUPTED)]
    assert hub.close_run(run) is None  # the job returning later changes nothing


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
