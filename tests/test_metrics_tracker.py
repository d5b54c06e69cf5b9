"""Metrics through a real Tracker and a real BackgroundScheduler: what /metrics shows operators."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tracker import BaseSink, MetricsSink, Tracker, TrackerSettings, tracked_job

release = threading.Event()


@tracked_job
def fails() -> None:
    raise RuntimeError("boom")


@tracked_job
def waits() -> None:
    release.wait(10)


def undecorated_fails() -> None:
    raise ValueError("not decorated, recorded from scheduler events")


def noop() -> None:
    return None


def value(body: bytes, name: str, **labels: str) -> float | None:
    wanted = tuple(sorted(labels.items()))
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and tuple(sorted(s.labels.items())) == wanted:
                return s.value
    return None


def job_lines(body: bytes, job: str) -> list[str]:
    return [line for line in body.decode().splitlines() if f'job="{job}"' in line]


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


class Setup:
    def __init__(self, tracker: Tracker, scheduler: BackgroundScheduler) -> None:
        self.tracker = tracker
        self.scheduler = scheduler

    def scrape(self) -> bytes:
        assert self.tracker.flush(5)
        assert self.tracker.metrics is not None
        return self.tracker.metrics.render()


@pytest.fixture
def setup(sqlite_url: str) -> Iterator[Setup]:
    registry = CollectorRegistry()
    tracker = Tracker(
        sqlite_url,
        settings=TrackerSettings(flush_interval=0.02),
        sinks=[MetricsSink(registry, removed_linger=0)],
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.start()
    release.clear()
    yield Setup(tracker, scheduler)
    release.set()
    scheduler.shutdown(wait=True)
    tracker.close(5)


def test_next_run_and_paused_follow_the_scheduler(setup: Setup) -> None:
    """Add, modify, reschedule, pause, resume, rename and remove are all reflected."""
    scheduler = setup.scheduler

    def next_run() -> float:
        return scheduler.get_job("report").next_run_time.timestamp()  # type: ignore[no-any-return]

    scheduler.add_job(noop, "interval", hours=1, id="report", name="hourly_report")
    body = setup.scrape()
    assert value(body, "jobtracker_next_run_timestamp_seconds", job="hourly_report") == (
        pytest.approx(next_run())
    )
    assert value(body, "jobtracker_job_paused", job="hourly_report") == 0
    assert value(body, "jobtracker_runs_total", job="hourly_report", status="failed") == 0

    scheduler.modify_job("report", max_instances=3)
    assert value(setup.scrape(), "jobtracker_next_run_timestamp_seconds", job="hourly_report") == (
        pytest.approx(next_run())
    )

    scheduler.reschedule_job("report", trigger="interval", minutes=5)
    assert next_run() < time.time() + 301
    assert value(setup.scrape(), "jobtracker_next_run_timestamp_seconds", job="hourly_report") == (
        pytest.approx(next_run())
    )

    scheduler.pause_job("report")
    body = setup.scrape()
    assert value(body, "jobtracker_job_paused", job="hourly_report") == 1
    assert value(body, "jobtracker_next_run_timestamp_seconds", job="hourly_report") == 0

    scheduler.resume_job("report")
    body = setup.scrape()
    assert value(body, "jobtracker_job_paused", job="hourly_report") == 0
    assert value(body, "jobtracker_next_run_timestamp_seconds", job="hourly_report") == (
        pytest.approx(next_run())
    )

    scheduler.modify_job("report", name="report_v2")
    body = setup.scrape()
    assert job_lines(body, "hourly_report") == []
    assert value(body, "jobtracker_job_paused", job="report_v2") == 0

    scheduler.remove_job("report")
    body = setup.scrape()
    assert job_lines(body, "report_v2") == []
    assert b"jobtracker_runs_total" in body  # the family stays, without that job's series


def test_a_daily_jobs_first_failure_moves_the_counter_from_zero(setup: Setup) -> None:
    """Before its first run the failed counter is scraped at 0, then 1: increase() sees it."""
    scheduler = setup.scheduler
    scheduler.add_job(fails, "cron", hour=3, id="nightly", name="nightly_export")
    before = setup.scrape()
    assert value(before, "jobtracker_runs_total", job="nightly_export", status="failed") == 0
    assert value(before, "jobtracker_consecutive_failures", job="nightly_export") == 0

    instrumentation = setup.tracker.instrument(scheduler)
    instrumentation.run_now("nightly")
    wait_for(
        lambda: (
            value(setup.scrape(), "jobtracker_runs_total", job="nightly_export", status="failed")
            == 1
        )
    )
    body = setup.scrape()
    assert value(body, "jobtracker_consecutive_failures", job="nightly_export") == 1
    assert value(body, "jobtracker_last_failure_timestamp_seconds", job="nightly_export") == (
        pytest.approx(time.time(), abs=30)
    )
    assert value(body, "jobtracker_run_duration_seconds_count", job="nightly_export") == 1
    # the manual run's one-shot job id never becomes a label, and the schedule is untouched
    assert b"#manual" not in body
    assert value(body, "jobtracker_next_run_timestamp_seconds", job="nightly_export") == (
        pytest.approx(scheduler.get_job("nightly").next_run_time.timestamp())
    )


def test_undecorated_job_failures_are_counted_from_events(setup: Setup) -> None:
    """A plain function's runs (known from scheduler events) count like decorated ones."""
    setup.scheduler.add_job(
        undecorated_fails, "interval", hours=1, next_run_time=datetime.now(UTC), id="plain",
        name="plain_job",
    )  # fmt: skip
    wait_for(
        lambda: (
            value(setup.scrape(), "jobtracker_runs_total", job="plain_job", status="failed") == 1
        )
    )
    body = setup.scrape()
    assert value(body, "jobtracker_consecutive_failures", job="plain_job") == 1
    assert value(body, "jobtracker_runs_in_progress", job="plain_job") == 0


def test_one_shot_job_series_go_away_after_its_last_run(setup: Setup) -> None:
    """A date job (removed by APScheduler when it fires) is counted, then its series go away."""
    setup.scheduler.add_job(
        undecorated_fails, "date", run_date=datetime.now(UTC), id="once", name="one_shot"
    )
    wait_for(lambda: not setup.scheduler.get_jobs())
    wait_for(lambda: not job_lines(setup.scrape(), "one_shot"), timeout=3)


def test_runs_in_progress_while_a_job_runs(setup: Setup) -> None:
    """A run in progress shows as 1 until it finishes, then counts as succeeded."""
    setup.scheduler.add_job(
        waits, "interval", hours=1, next_run_time=datetime.now(UTC), id="w", name="waiter"
    )
    wait_for(lambda: value(setup.scrape(), "jobtracker_runs_in_progress", job="waiter") == 1)
    release.set()
    wait_for(
        lambda: (
            value(setup.scrape(), "jobtracker_runs_total", job="waiter", status="succeeded") == 1
        )
    )
    body = setup.scrape()
    assert value(body, "jobtracker_runs_in_progress", job="waiter") == 0
    assert value(body, "jobtracker_last_success_timestamp_seconds", job="waiter") == (
        pytest.approx(time.time(), abs=30)
    )
    assert value(body, "jobtracker_run_lateness_seconds_count", job="waiter") == 1


class Broken(BaseSink):
    name = "broken"

    def handle(self, events: object) -> None:
        raise OSError("destination down")


def test_tracker_health_is_exported(sqlite_url: str) -> None:
    """records_pending/dropped and sink_errors per sink come from the tracker's own hub."""
    registry = CollectorRegistry()
    tracker = Tracker(
        sqlite_url, settings=TrackerSettings(flush_interval=0.02), sinks=[Broken()],
        registry=registry,
    )  # fmt: skip
    try:
        assert tracker.metrics is not None
        assert tracker.metrics.registry is registry
        body = tracker.metrics.render()
        assert value(body, "jobtracker_records_pending") is not None
        assert value(body, "jobtracker_records_dropped_total") == 0
        assert value(body, "jobtracker_sink_errors_total", sink="database") == 0
        assert value(body, "jobtracker_sink_errors_total", sink="broken") == 0
        with pytest.raises(RuntimeError):
            fails_directly()
        tracker.flush(5)
        body = tracker.metrics.render()
        assert value(body, "jobtracker_sink_errors_total", sink="broken") >= 1  # type: ignore[operator]
        assert value(body, "jobtracker_runs_total", job="fails_directly", status="failed") == 1
    finally:
        tracker.close(5)


@tracked_job
def fails_directly() -> None:
    raise RuntimeError("called outside a scheduler")


def test_trackers_on_one_registry_and_metrics_off(sqlite_url: str) -> None:
    """A second Tracker on the same registry is no error; metrics=False registers nothing."""
    registry = CollectorRegistry()
    settings = TrackerSettings(flush_interval=0.02)
    first = Tracker(sqlite_url, settings=settings, registry=registry)
    second = Tracker(sqlite_url, settings=settings, registry=registry)
    off = Tracker(sqlite_url, settings=settings, registry=registry, metrics=False)
    try:
        assert off.metrics is None
        assert first.metrics is not None
        assert second.metrics is not None
        assert generate_latest(registry).count(b"# TYPE jobtracker_runs_total counter") == 1
    finally:
        for t in (off, second, first):
            t.close(5)
    assert b"jobtracker_" not in generate_latest(registry)


def test_default_linger_keeps_a_removed_jobs_last_state(sqlite_url: str) -> None:
    """With the default removed_linger, a removed job's final counts stay for the next scrapes."""
    tracker = Tracker(
        sqlite_url, settings=TrackerSettings(flush_interval=0.02), registry=CollectorRegistry()
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.start()
    try:
        scheduler.add_job(noop, "interval", hours=1, id="gone", name="soon_removed")
        scheduler.remove_job("gone")
        tracker.flush(5)
        assert tracker.metrics is not None
        body = tracker.metrics.render()
        assert value(body, "jobtracker_runs_total", job="soon_removed", status="succeeded") == 0
        assert value(body, "jobtracker_next_run_timestamp_seconds", job="soon_removed") == 0
    finally:
        scheduler.shutdown(wait=False)
        tracker.close(5)


def flaky(ok: bool) -> None:
    if not ok:
        raise RuntimeError("still broken")


def test_a_restart_keeps_the_failure_streak_and_last_outcomes(database_url: str) -> None:
    """JobFailingRepeatedly must not resolve because the service restarted: the new process
    starts each job's consecutive failures, last success and last failure from the history,
    and jobs that are gone from every scheduler do not come back from it."""
    settings = TrackerSettings(flush_interval=0.02)
    first = Tracker(database_url, settings=settings, registry=CollectorRegistry(), watchdog=False)
    scheduler = BackgroundScheduler(timezone="UTC")
    first.instrument(scheduler)
    scheduler.start()
    assert first.metrics is not None
    metrics = first.metrics
    try:
        outcomes = [
            ("retired", False),
            ("etl", True),
            ("etl", False),
            ("etl", False),
            ("etl", False),
        ]
        for i, (name, ok) in enumerate(outcomes):
            scheduler.add_job(
                flaky, "date", run_date=datetime.now(UTC), args=[ok], id=f"{name}-{i}", name=name
            )
            status = "succeeded" if ok else "failed"
            done = sum(ok is o for n, o in outcomes[: i + 1] if n == name)
            wait_for(
                lambda n=name, s=status, d=done: (
                    value(metrics.render(), "jobtracker_runs_total", job=n, status=s) == d
                )
            )
        before = first.metrics.render()
        assert value(before, "jobtracker_consecutive_failures", job="etl") == 3
    finally:
        scheduler.shutdown(wait=True)
        first.close(5)

    second = Tracker(database_url, settings=settings, registry=CollectorRegistry(), watchdog=False)
    scheduler = BackgroundScheduler(timezone="UTC")
    second.instrument(scheduler)
    scheduler.start()
    try:
        assert second.metrics is not None
        restarted = second.metrics
        scheduler.add_job(noop, "interval", hours=1, id="etl", name="etl")
        wait_for(
            lambda: value(restarted.render(), "jobtracker_consecutive_failures", job="etl") == 3
        )
        body = restarted.render()
        for gauge in ("last_success", "last_failure"):
            name = f"jobtracker_{gauge}_timestamp_seconds"
            assert value(body, name, job="etl") == pytest.approx(value(before, name, job="etl"))
        assert (
            value(body, "jobtracker_runs_total", job="etl", status="failed") == 0
        )  # counters restart
        assert job_lines(body, "retired") == []
    finally:
        scheduler.shutdown(wait=True)
        second.close(5)


def test_failure_streaks_read_per_job_name_within_bounds(database_url: str) -> None:
    """The history read behind the seeding: per job name (over its job ids), only runs that
    finished before the process started, at most ``depth`` newest runs per job id."""
    from sqlalchemy import insert

    from tracker.sinks.database import create_tracker_engine, executions, upgrade
    from tracker.sinks.database.queries import failure_streaks

    engine = create_tracker_engine(database_url)
    upgrade(engine)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)

    def row(job_id: str, name: str, status: str, minute: int) -> dict[str, object]:
        at = t0 + timedelta(minutes=minute)
        started = status not in {"missed", "skipped"}
        return {
            "run_id": f"{job_id}-{minute}", "job_id": job_id, "job_name": name, "status": status,
            "scheduled_at": at, "started_at": at if started else None,
            "finished_at": at + timedelta(seconds=5) if started else None, "instance": "test",
        }  # fmt: skip

    rows = [
        row("a", "a", "succeeded", 0),
        *(row("a", "a", "failed", m) for m in (1, 2)),
        row("a", "a", "timed_out", 3),
        *(row("a", "a", s, m) for s, m in (("missed", 4), ("skipped", 5), ("interrupted", 6))),
        row("a", "a", "failed", 60),  # finished after the process started: the events' to count
        # one name, two job ids (one-shot jobs of one function)
        row("r1", "reminder", "failed", 1),
        row("r2", "reminder", "succeeded", 2),
        row("r1", "reminder", "failed", 3),
        # renamed: each run keeps the name it had
        row("n", "old", "failed", 1),
        row("n", "new", "failed", 2),
        # more failures than ``depth``: the last success is still found further back
        row("long", "long", "succeeded", 0),
        *(row("long", "long", "failed", m) for m in range(1, 11)),
    ]
    with engine.begin() as conn:
        conn.execute(insert(executions), rows)
    try:
        found = failure_streaks(engine, before=t0 + timedelta(minutes=30), depth=8)
        at = {m: t0 + timedelta(minutes=m, seconds=5) for m in (0, 2, 3, 10)}
        assert found["a"] == (at[0], at[3], 3)
        assert found["reminder"] == (at[2], at[3], 1)
        assert found["old"].consecutive_failures == 1
        assert found["new"].consecutive_failures == 1
        assert found["long"] == (at[0], at[10], 8)  # counted up to depth: enough to alert
        assert failure_streaks(engine, before=t0 + timedelta(minutes=30), max_jobs=1).keys() == {
            "long"
        }
    finally:
        engine.dispose()
