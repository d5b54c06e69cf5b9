"""Sentry: the real sentry-sdk sending to a local HTTP endpoint standing in for Sentry."""

from __future__ import annotations

import asyncio
import contextvars
import gzip
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import TZPATH, ZoneInfo

import pytest
import sentry_sdk
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.integrations.logging import LoggingIntegration, unignore_logger
from support import slow_job, wait_for

from tracker import Status, Tracker, TrackerSettings, tracked_job
from tracker.sinks.sentry import UnsupportedSchedule, monitor_config, monitor_slug

PROVIDER = TracerProvider(shutdown_on_exit=False)
RAN = threading.Event()
RUNS_LOGGER = "tracker.runs"
"""The logger of the lifecycle log events (logs=True)."""


@tracked_job
def failing_job() -> None:
    raise ValueError("invoice 42 could not be synced")


@tracked_job
def ok_job() -> None:
    RAN.set()


def plain_failing_job() -> None:
    raise KeyError("undecorated failure")


@tracked_job
def tagging_job(name: str) -> None:
    """Sets a tag and a user on the scope the way job code does, then fails."""
    sentry_sdk.set_tag("customer", name)
    sentry_sdk.set_user({"id": name})
    raise RuntimeError(f"failure of {name}")


@tracked_job
def quiet_failing_job() -> None:
    raise RuntimeError("second run")


@tracked_job(max_runtime=0.05)
def overrunning_job() -> None:
    """Returns normally, but only after the watchdog marked it timed out."""
    time.sleep(0.6)


# -- a local endpoint standing in for Sentry ----------------------------------------------


def parse_envelope(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(item header, JSON payload) of every item of a Sentry envelope."""
    items = []
    _, _, rest = body.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((header, json.loads(payload) if payload.strip() else {}))
    return items


class _Sentry(ThreadingHTTPServer):
    items: list[tuple[dict[str, Any], dict[str, Any]]]
    lock: threading.Lock

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [payload for header, payload in self.items if header.get("type") == kind]


class _Handler(BaseHTTPRequestHandler):
    server: _Sentry

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert self.path.startswith("/api/1/envelope/")
        with self.server.lock:
            self.server.items.extend(parse_envelope(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def endpoint() -> Iterator[_Sentry]:
    server = _Sentry(("127.0.0.1", 0), _Handler)
    server.items, server.lock = [], threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _init(server: _Sentry, **options: Any) -> None:
    options.setdefault("auto_enabling_integrations", False)  # keep other tests' libraries as-is
    sentry_sdk.init(dsn=f"http://public@127.0.0.1:{server.server_port}/1", **options)


def _init_without_dedupe(server: _Sentry) -> None:
    """Sentry with its logging integration only: no dedupe to hide a failure sent twice."""
    _init(
        server,
        default_integrations=False,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
    )


@pytest.fixture
def sentry(endpoint: _Sentry) -> Iterator[_Sentry]:
    """Sentry initialised with its default integrations (logging, dedupe, threading...)."""
    _init(endpoint)
    yield endpoint
    _uninit()


def _uninit() -> None:
    client = sentry_sdk.get_client()
    client.close(timeout=2)
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def make(sqlite_url: str) -> Iterator[Any]:
    made: list[Tracker] = []

    def build(**options: Any) -> Tracker:
        tracker = Tracker(
            sqlite_url, settings=TrackerSettings(flush_interval=0.02), metrics=False, **options
        )
        made.append(tracker)
        return tracker

    yield build
    for tracker in made:
        tracker.close(timeout=5)


def _scheduler(tracker: Tracker, workers: int = 2) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(workers)},
        job_defaults={"misfire_grace_time": None},
        timezone="UTC",
    )
    tracker.instrument(scheduler)
    scheduler.start()
    return scheduler


def _finished(tracker: Tracker, job_id: str, count: int = 1) -> list[Any]:
    def done() -> list[Any]:
        rows = [r for r in tracker.executions(job_id=job_id) if r.status is not Status.RUNNING]
        return rows if len(rows) >= count else []

    rows = wait_for(done)
    assert tracker.flush(10)
    return rows


def _run(tracker: Tracker, func: Any, job_id: str, **add: Any) -> Any:
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(func, "date", run_date=datetime.now(UTC), id=job_id, **add)
        (row,) = _finished(tracker, job_id)
    finally:
        scheduler.shutdown()
    sentry_sdk.flush(5)
    return row


# -- per-run scope, exactly once ---------------------------------------------------------


def test_failing_run_reaches_sentry_once_with_its_tags_context_and_trace(
    make: Any, sentry: _Sentry
) -> None:
    """One event per failure, tagged job_id/run_id/job_status, with fire time, lateness and the
    run's OpenTelemetry trace id, and not a second one from APScheduler's logger.exception."""
    tracker = make(tracing=True, tracer_provider=PROVIDER, sentry=True)
    row = _run(tracker, failing_job, "invoices")
    (event,) = sentry.of_type("event")
    assert event["tags"]["job_id"] == "invoices"
    assert event["tags"]["run_id"] == row.run_id
    assert event["tags"]["job_status"] == "failed"
    assert event["transaction"] == "failing_job"
    job = event["contexts"]["job"]
    assert datetime.fromisoformat(job["scheduled_at"]) == row.scheduled_at
    assert job["lateness_s"] == pytest.approx(row.lateness_s)
    assert event["contexts"]["trace"]["trace_id"] == row.trace_id
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert exception["value"] == "invoice 42 could not be synced"


def test_exactly_once_without_sentrys_dedupe(make: Any, endpoint: _Sentry) -> None:
    """Even with only the logging integration (no dedupe), a failure is sent once."""
    _init_without_dedupe(endpoint)
    try:
        tracker = make(sentry=True)
        row = _run(tracker, failing_job, "invoices")
    finally:
        _uninit()
    (event,) = endpoint.of_type("event")
    assert event["tags"]["run_id"] == row.run_id


def test_undecorated_job_failure_reaches_sentry_once_tagged_with_its_job(
    make: Any, sentry: _Sentry
) -> None:
    """A job without @tracked_job is captured once (from APScheduler's record), with its id."""
    tracker = make(sentry=True)
    _run(tracker, plain_failing_job, "plain")
    (event,) = sentry.of_type("event")
    assert event["tags"]["job_id"] == "plain"
    assert event["tags"]["job_status"] == "failed"
    assert event["exception"]["values"][0]["type"] == "KeyError"


def test_without_the_tracker_apschedulers_record_still_reaches_sentry(
    make: Any, sentry: _Sentry
) -> None:
    """With sentry=False, the logging integration reports the failure as usual (once)."""
    tracker = make()
    _run(tracker, failing_job, "invoices")
    (event,) = sentry.of_type("event")
    assert "run_id" not in event.get("tags", {})
    assert "raised an exception" in event["logentry"]["message"]


def test_timed_out_run_is_one_error_event(make: Any, sentry: _Sentry) -> None:
    """A run past its max_runtime (that returned normally) is one error event, status timed_out."""
    tracker = make(sentry=True)
    row = _run(tracker, overrunning_job, "slow")
    assert row.status is Status.TIMED_OUT
    (event,) = sentry.of_type("event")
    assert event["level"] == "error"
    assert event["message"] == 'Job "overrunning_job" ran past its max_runtime of 0.05 s'
    assert event["tags"]["job_status"] == "timed_out"
    assert event["tags"]["run_id"] == row.run_id


def test_logs_without_sentry_do_not_take_the_failure_away_from_sentry(
    make: Any, sentry: _Sentry
) -> None:
    """logs=True drops APScheduler's record; its Sentry event (logging integration) stays: once."""
    tracker = make(logs=True)
    _run(tracker, failing_job, "invoices")
    (event,) = sentry.of_type("event")
    assert event["tags"]["job_id"] == "invoices"
    assert event["exception"]["values"][0]["type"] == "ValueError"


@pytest.fixture
def stdlib_structlog() -> Iterator[None]:
    """A common structlog setup: events rendered to JSON and written through stdlib logging
    (where Sentry's logging integration sees them). Restored after the test."""
    config = structlog.get_config()
    unignore_logger(RUNS_LOGGER)  # what an earlier tracker made Sentry ignore
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    yield
    structlog.reset_defaults()
    structlog.configure(**config)


@pytest.mark.usefixtures("stdlib_structlog")
@pytest.mark.parametrize("sentry_first", [True, False], ids=["sentry-first", "tracker-first"])
@pytest.mark.parametrize(
    ("func", "status"), [(failing_job, Status.FAILED), (overrunning_job, Status.TIMED_OUT)]
)
def test_lifecycle_log_events_through_stdlib_logging_do_not_reach_sentry_again(
    make: Any, endpoint: _Sentry, sentry_first: bool, func: Any, status: Status
) -> None:
    """logs=True + sentry=True, structlog writing through stdlib logging, Sentry's default
    logging integration: the job_failed / job_timed_out ERROR line is written, but the failure
    reaches Sentry once (the tracker's own event), whichever of the two was set up first."""
    if sentry_first:
        _init(endpoint)
    tracker = make(sentry=True, logs=True)
    if not sentry_first:
        _init(endpoint)
    lines: list[logging.LogRecord] = []
    runs_logger = logging.getLogger(RUNS_LOGGER)
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign]
    runs_logger.addHandler(handler)
    try:
        row = _run(tracker, func, "invoices")
    finally:
        runs_logger.removeHandler(handler)
        _uninit()
    assert row.status is status
    assert any(r.levelno == logging.ERROR and status.value in r.getMessage() for r in lines)
    (event,) = endpoint.of_type("event")
    assert event["tags"]["run_id"] == row.run_id
    assert event.get("logger") != RUNS_LOGGER


@pytest.mark.usefixtures("stdlib_structlog")
@pytest.mark.parametrize(
    ("func", "status"), [(failing_job, Status.FAILED), (overrunning_job, Status.TIMED_OUT)]
)
def test_logs_without_sentry_through_stdlib_logging_reach_sentry_once(
    make: Any, endpoint: _Sentry, func: Any, status: Status
) -> None:
    """logs=True, sentry=False, structlog writing through stdlib logging, Sentry's logging
    integration without dedupe: a failure reached Sentry twice — the exception (sent in place
    of APScheduler's dropped record) and the ``job_failed`` line. The line is what reaches it
    now, once; a timed-out run's ``job_timed_out`` line too (the only way it gets there)."""
    _init_without_dedupe(endpoint)
    try:
        tracker = make(logs=True)
        row = _run(tracker, func, "invoices")
    finally:
        _uninit()
    assert row.status is status
    (event,) = endpoint.of_type("event")
    assert event["logger"] == RUNS_LOGGER
    assert row.run_id in event["logentry"]["message"]


def test_no_scope_leaks_between_runs_on_a_reused_pool_thread(make: Any, sentry: _Sentry) -> None:
    """On a one-thread pool, what run A set on its scope never shows on run B's event."""
    tracker = make(sentry=True)
    scheduler = _scheduler(tracker, workers=1)
    try:
        scheduler.add_job(tagging_job, "date", run_date=datetime.now(UTC), id="a", args=["acme"])
        (first,) = _finished(tracker, "a")
        scheduler.add_job(quiet_failing_job, "date", run_date=datetime.now(UTC), id="b")
        (second,) = _finished(tracker, "b")
    finally:
        scheduler.shutdown()
    sentry_sdk.flush(5)
    events = {e["tags"]["job_id"]: e for e in sentry.of_type("event")}
    assert events["a"]["tags"]["customer"] == "acme"
    assert events["a"]["tags"]["run_id"] == first.run_id
    assert "customer" not in events["b"]["tags"]
    assert "user" not in events["b"]
    assert events["b"]["tags"]["run_id"] == second.run_id
    assert (
        events["a"]["contexts"]["trace"]["trace_id"] != events["b"]["contexts"]["trace"]["trace_id"]
    )


def test_a_run_cut_short_by_close_leaves_its_scope_behind(make: Any, sentry: _Sentry) -> None:
    """``close()`` records a run still in progress as interrupted, from the closing thread; when
    the job returns, its thread leaves the run's isolation scope, so what the pool thread sends
    next is not tagged with the dead run."""
    release, running = threading.Event(), threading.Event()

    @tracked_job
    def long_report() -> None:
        running.set()
        release.wait(10)

    def next_job() -> None:  # not tracked: the tracker is closed by then
        sentry_sdk.capture_message("after the tracker closed")

    tracker = make(sentry=True)
    scheduler = _scheduler(tracker, workers=1)
    try:
        scheduler.add_job(long_report, id="long_report")
        assert running.wait(10)
        tracker.close()
        release.set()
        scheduler.add_job(next_job, id="next_job")  # the same (only) pool thread

        def sent() -> list[dict[str, Any]]:
            sentry_sdk.flush(1)
            return sentry.of_type("event")

        wait_for(sent)
    finally:
        release.set()
        scheduler.shutdown()
    (event,) = sentry.of_type("event")
    assert event["message"] == "after the tracker closed"
    assert "run_id" not in event.get("tags", {}) and "job_id" not in event.get("tags", {})


def test_asyncio_runs_start_from_the_schedulers_context_not_add_jobs_callers(
    make: Any, sentry: _Sentry
) -> None:
    """On an AsyncIOScheduler, ``add_job()`` wakes the scheduler, and the wake-up ran in a copy of
    the caller's context; so did the timer it set and every job task after it. An HTTP request
    adding a job (its Sentry user and tags, its structlog context), or a run adding one (the tags
    it set), then marked every later run of every job. Runs now start from the context the
    scheduler was started in."""
    request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id")
    seen: list[str | None] = []
    enough: list[asyncio.Event] = []

    def saw() -> None:
        seen.append(request_id.get(None))
        if len(seen) >= 4:
            enough[0].set()

    @tracked_job
    async def fan_out() -> None:
        sentry_sdk.set_tag("customer", "bob")
        scheduler.add_job(follow_up, id="follow_up")

    @tracked_job
    async def follow_up() -> None:
        saw()

    @tracked_job
    async def billing_sync() -> None:
        saw()
        raise RuntimeError("billing sync failed")

    async def request() -> None:  # what an endpoint adding a job does, in its own task
        request_id.set("req-1")
        sentry_sdk.get_isolation_scope().set_user({"id": "alice"})
        sentry_sdk.get_isolation_scope().set_tag("tenant", "acme")
        scheduler.add_job(fan_out, id="fan_out")

    tracker = make(sentry=True)
    scheduler = AsyncIOScheduler(timezone="UTC")
    tracker.instrument(scheduler)

    async def main() -> None:
        enough.append(asyncio.Event())
        scheduler.start()
        scheduler.add_job(billing_sync, "interval", seconds=0.1, id="billing_sync")
        with sentry_sdk.isolation_scope():
            await asyncio.create_task(request())
        await asyncio.wait_for(enough[0].wait(), 10)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert tracker.flush(10)
    sentry_sdk.flush(5)
    assert len(seen) >= 4 and seen == [None] * len(seen)
    events = [e for e in sentry.of_type("event") if e["tags"]["job_id"] == "billing_sync"]
    assert len(events) >= 3
    for event in events:
        assert "user" not in event
        assert "tenant" not in event["tags"] and "customer" not in event["tags"]


def test_a_failure_on_an_executor_other_than_default_is_sent_once(
    make: Any, endpoint: _Sentry, caplog: pytest.LogCaptureFixture
) -> None:
    """APScheduler's record of a failure was dropped only on executors whose logger existed when
    the tracker was made (``default``): a job on another executor reached Sentry twice (the
    run's event, and the record through the logging integration), and the record reached the
    service's log handlers."""
    _init_without_dedupe(endpoint)
    try:
        tracker = make(sentry=True)
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(2), "io_pool": ThreadPoolExecutor(2)},
            timezone="UTC",
        )
        tracker.instrument(scheduler)
        scheduler.start()
        try:
            scheduler.add_job(failing_job, id="invoices", executor="io_pool")
            scheduler.add_job(plain_failing_job, id="plain", executor="io_pool")
            _finished(tracker, "invoices")
            _finished(tracker, "plain")
        finally:
            scheduler.shutdown()
        sentry_sdk.flush(5)
    finally:
        _uninit()
    events = endpoint.of_type("event")
    assert sorted(e["tags"]["job_id"] for e in events) == ["invoices", "plain"]
    assert not [r for r in caplog.records if "raised an exception" in r.getMessage()]


def test_sentry_not_initialised_is_a_no_op(make: Any) -> None:
    """With the SDK not initialised, sentry=True and crons change nothing for the jobs."""
    assert not sentry_sdk.get_client().is_active()
    tracker = make(sentry=True, sentry_crons=True)
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(ok_job, "interval", minutes=5, id="ok", next_run_time=datetime.now(UTC))
        scheduler.add_job(failing_job, "date", run_date=datetime.now(UTC), id="bad")
        (ok,) = _finished(tracker, "ok")
        (bad,) = _finished(tracker, "bad")
    finally:
        scheduler.shutdown()
    assert ok.status is Status.SUCCEEDED
    assert bad.status is Status.FAILED
    assert tracker.stats().sink_errors == {}


def test_a_broken_sentry_call_never_breaks_the_job(
    make: Any, sentry: _Sentry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the SDK raises inside our hook, the job still runs and is recorded; the error counted."""

    def broken() -> Any:
        raise RuntimeError("sentry is broken")

    monkeypatch.setattr(sentry_sdk, "isolation_scope", broken)
    tracker = make(sentry=True)
    RAN.clear()
    row = _run(tracker, ok_job, "ok")
    assert RAN.is_set()
    assert row.status is Status.SUCCEEDED
    assert tracker.stats().sink_errors.get("sentry") == 1


# -- Crons ---------------------------------------------------------------------------------


def test_crons_check_ins_for_cron_and_interval_jobs(make: Any, sentry: _Sentry) -> None:
    """Each scheduled run checks in under the job's monitor, whose schedule comes from the
    job's cron or interval trigger. A run that ends within the hub's announce interval sends
    one check-in (ok or error, with its duration); a longer one sends in_progress first."""
    tracker = make(sentry=True, sentry_crons=True)
    scheduler = _scheduler(tracker)
    now = datetime.now(UTC)
    try:
        scheduler.add_job(
            ok_job,
            CronTrigger(
                minute="*/15", hour="8-18", day_of_week="mon-fri", timezone="Europe/Berlin"
            ),
            id="Reports.Hourly",
            next_run_time=now,
        )
        scheduler.add_job(failing_job, "interval", hours=2, id="sync", next_run_time=now)
        scheduler.add_job(slow_job, "interval", minutes=5, args=[0.4], id="long", next_run_time=now)
        (report,) = _finished(tracker, "Reports.Hourly")
        (sync,) = _finished(tracker, "sync")
        (long,) = _finished(tracker, "long")
        wait_for(lambda: len(sentry.of_type("check_in")) >= 4 or sentry_sdk.flush(1))
    finally:
        scheduler.shutdown()
    check_ins = sentry.of_type("check_in")
    by_slug: dict[str, list[dict[str, Any]]] = {}
    for check_in in check_ins:
        by_slug.setdefault(check_in["monitor_slug"], []).append(check_in)
    report_ins = by_slug[monitor_slug("Reports.Hourly")]
    assert monitor_slug("Reports.Hourly") == "reports-hourly"
    assert [c["status"] for c in report_ins] == ["ok"]
    assert {c["check_in_id"] for c in report_ins} == {report.run_id.replace("-", "")}
    assert report_ins[0]["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "*/15 8-18 * * 1,2,3,4,5"},
        "timezone": "Europe/Berlin",
    }
    sync_ins = by_slug["sync"]
    assert [c["status"] for c in sync_ins] == ["error"]
    assert sync_ins[0]["duration"] == pytest.approx(sync.duration_s)
    assert sync_ins[0]["monitor_config"]["schedule"] == {
        "type": "interval",
        "value": 2,
        "unit": "hour",
    }
    long_ins = by_slug["long"]
    assert [c["status"] for c in long_ins] == ["in_progress", "ok"]
    assert {c["check_in_id"] for c in long_ins} == {long.run_id.replace("-", "")}
    assert long_ins[1]["duration"] == pytest.approx(long.duration_s)
    assert long.duration_s >= 0.4


def test_crons_skip_schedules_sentry_cannot_represent_with_one_warning(
    make: Any, sentry: _Sentry, caplog: pytest.LogCaptureFixture
) -> None:
    """Sub-minute intervals and cron with seconds send no check-in and warn once per job."""
    tracker = make(sentry=True, sentry_crons=True)
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(ok_job, "interval", seconds=0.1, id="fast")
        scheduler.add_job(ok_job, "cron", second="*", id="every-second")
        _finished(tracker, "fast", count=3)
        _finished(tracker, "every-second", count=2)
    finally:
        scheduler.shutdown()
    sentry_sdk.flush(5)
    assert sentry.of_type("check_in") == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "tracker.sentry"]
    assert len([w for w in warnings if "'fast'" in w]) == 1
    assert len([w for w in warnings if "'every-second'" in w]) == 1
    assert "whole number of minutes" in next(w for w in warnings if "'fast'" in w)


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (CronTrigger.from_crontab("30 2 * * *", timezone="UTC"), "30 2 * * *"),
        (CronTrigger(day_of_week="sun", hour=3, timezone="UTC"), "0 3 * * 0"),
        (CronTrigger(day_of_week="sat-sun", timezone="UTC"), "0 0 * * 0,6"),
        # APScheduler 3 reads crontab weekdays from monday = 0: "1-5" is tue-sat
        (CronTrigger.from_crontab("0 9 * * 1-5", timezone="UTC"), "0 9 * * 2,3,4,5,6"),
        (CronTrigger(minute="5/15", timezone="UTC"), "5-59/15 * * * *"),
        (CronTrigger(month="jan-mar", day=1, timezone="UTC"), "0 0 1 jan-mar *"),
    ],
)
def test_monitor_schedule_from_cron_triggers(trigger: Any, expected: str) -> None:
    """Cron triggers map to the 5-field crontab that fires at the same times."""
    config = monitor_config(trigger)
    assert config is not None
    assert config["schedule"] == {"type": "crontab", "value": expected}
    assert config["timezone"] == "UTC"


def test_monitor_schedule_from_interval_triggers_and_max_runtime() -> None:
    """Intervals become the largest whole unit; max_runtime is rounded up to minutes."""
    assert monitor_config(IntervalTrigger(days=7), max_runtime=90) == {
        "schedule": {"type": "interval", "value": 1, "unit": "week"},
        "max_runtime": 2,
    }
    assert monitor_config(IntervalTrigger(minutes=90))["schedule"] == {  # type: ignore[index]
        "type": "interval",
        "value": 90,
        "unit": "minute",
    }
    assert monitor_config(DateTrigger(datetime.now(UTC))) is None


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        (ZoneInfo("PST8PDT"), "PST8PDT"),
        (ZoneInfo("EST5EDT"), "EST5EDT"),
        (ZoneInfo("CST6CDT"), "CST6CDT"),
        (timezone(timedelta(hours=2)), "Etc/GMT-2"),  # POSIX signs: Etc/GMT-2 is UTC+02:00
        (timezone(timedelta(hours=-5)), "Etc/GMT+5"),
        (timezone(timedelta(hours=14)), "Etc/GMT-14"),
    ],
)
def test_cron_monitors_keep_the_triggers_time_zone(zone: Any, expected: str) -> None:
    """The monitor's timezone is the IANA name of the zone the trigger fires in — digits and
    all, fixed whole-hour offsets as their Etc/GMT name — so Sentry expects the same moments."""
    trigger = CronTrigger(hour=9, minute=0, timezone=zone)
    config = monitor_config(trigger)
    assert config is not None
    assert config["timezone"] == expected
    named = CronTrigger(hour=9, minute=0, timezone=ZoneInfo(expected))
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    for _ in range(3):  # winter and summer alike
        fire = trigger.get_next_fire_time(None, moment)
        assert fire == named.get_next_fire_time(None, moment)
        moment = fire + timedelta(days=120)


def _unnamed_zone() -> ZoneInfo:
    """Europe/Paris read from its file: the same rules, but no name."""
    for root in TZPATH:
        path = Path(root) / "Europe" / "Paris"
        if path.is_file():
            with path.open("rb") as file:
                return ZoneInfo.from_file(file)
    pytest.skip("no system time zone database to read a zone file from")


@pytest.mark.parametrize(
    "zone",
    [timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-13)), "unnamed"],
)
def test_cron_monitors_without_a_nameable_time_zone_are_refused(zone: Any) -> None:
    """A zone Sentry could not be told (an offset of no whole hour, a zone without a name) is
    refused: never a monitor Sentry would read in UTC."""
    trigger = CronTrigger(hour=9, timezone=_unnamed_zone() if zone == "unnamed" else zone)
    with pytest.raises(UnsupportedSchedule, match="time zone"):
        monitor_config(trigger)


def test_crons_send_the_zone_of_fixed_offset_triggers_and_skip_unnameable_ones(
    make: Any, sentry: _Sentry, caplog: pytest.LogCaptureFixture
) -> None:
    """End to end: a UTC+02:00 cron job checks in with its monitor in Etc/GMT-2; a UTC+05:30
    one sends nothing and warns once."""
    tracker = make(sentry=True, sentry_crons=True)
    scheduler = _scheduler(tracker)
    now = datetime.now(UTC)
    plus_two, plus_five_thirty = timezone(timedelta(hours=2)), timezone(timedelta(hours=5.5))
    try:
        scheduler.add_job(
            ok_job, CronTrigger(hour=9, timezone=plus_two), id="two", next_run_time=now
        )
        scheduler.add_job(
            ok_job, CronTrigger(hour=9, timezone=plus_five_thirty), id="half", next_run_time=now
        )
        _finished(tracker, "two")
        _finished(tracker, "half")
        wait_for(lambda: sentry.of_type("check_in") or sentry_sdk.flush(1))
    finally:
        scheduler.shutdown()
    sentry_sdk.flush(5)
    (check_in,) = sentry.of_type("check_in")
    assert check_in["monitor_slug"] == "two"
    assert check_in["monitor_config"] == {
        "schedule": {"type": "crontab", "value": "0 9 * * *"},
        "timezone": "Etc/GMT-2",
    }
    warnings = [r.getMessage() for r in caplog.records if r.name == "tracker.sentry"]
    (warning,) = [w for w in warnings if "'half'" in w]
    assert "UTC+05:30" in warning


@pytest.mark.parametrize(
    "trigger",
    [
        IntervalTrigger(seconds=30),
        IntervalTrigger(seconds=90),
        CronTrigger(second="*/10", timezone="UTC"),
        CronTrigger(day="last", timezone="UTC"),
        CronTrigger(day="1st mon", timezone="UTC"),
        CronTrigger(day=1, day_of_week="mon", timezone="UTC"),
        CronTrigger(year=2030, timezone="UTC"),
        OrTrigger([IntervalTrigger(hours=1), IntervalTrigger(hours=3)]),
    ],
)
def test_schedules_sentry_cannot_represent_are_refused(trigger: Any) -> None:
    """Schedules without a faithful Sentry form raise instead of producing a wrong monitor."""
    with pytest.raises(UnsupportedSchedule):
        monitor_config(trigger)
