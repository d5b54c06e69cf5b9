"""Structured logs of runs: lifecycle events, run ids on job lines, one pipeline (structlog)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from opentelemetry.sdk.trace import TracerProvider
from support import wait_for

from tracker import (
    Execution,
    RunContextFilter,
    Status,
    Tracker,
    TrackerSettings,
    configure_logging,
    current_run,
    tracked_job,
)

PROVIDER = TracerProvider(shutdown_on_exit=False)
DONE = threading.Event()
RELEASE = threading.Event()


@tracked_job
def chatty_job() -> None:
    structlog.get_logger("billing").info("syncing invoices", batch=3)
    logging.getLogger("billing.stdlib").warning("stdlib line from %s", "a thread")
    DONE.set()


@tracked_job
async def async_chatty_job() -> None:
    await asyncio.sleep(0)
    structlog.get_logger("billing").info("async structlog line")
    logging.getLogger("billing.stdlib").warning("async stdlib line")
    DONE.set()


@tracked_job
def failing_job() -> None:
    raise ValueError("invoice 42 could not be synced")


def plain_failing_job() -> None:
    raise KeyError("undecorated failure")


@tracked_job(max_runtime=0.05)
def overrunning_job() -> None:
    time.sleep(0.6)


@tracked_job
def blocking_job() -> None:
    DONE.set()
    RELEASE.wait(10)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    aps = logging.getLogger("apscheduler")
    aps_level = aps.level
    config = structlog.get_config()
    DONE.clear()
    RELEASE.clear()
    yield
    RELEASE.set()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    aps.setLevel(aps_level)
    structlog.reset_defaults()
    structlog.configure(**config)


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


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _finished(tracker: Tracker, job_id: str, count: int = 1) -> list[Any]:
    def done() -> list[Any]:
        rows = [r for r in tracker.executions(job_id=job_id) if r.status is not Status.RUNNING]
        return rows if len(rows) >= count else []

    rows = wait_for(done)
    assert tracker.flush(10)
    return rows


def test_each_lifecycle_change_is_one_json_event_with_the_run_ids(make: Any) -> None:
    """A run logs job_started then job_succeeded/job_failed, each once, with ids and duration."""
    out = io.StringIO()
    configure_logging("json", stream=out)
    tracker = make(tracing=True, tracer_provider=PROVIDER, logs=True)
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(chatty_job, "date", run_date=datetime.now(UTC), id="sync")
        scheduler.add_job(failing_job, "date", run_date=datetime.now(UTC), id="fail")
        (ok,) = _finished(tracker, "sync")
        (bad,) = _finished(tracker, "fail")
    finally:
        scheduler.shutdown()
    events = [e for e in _lines(out) if str(e["event"]).startswith("job_")]
    for row, final in ((ok, "job_succeeded"), (bad, "job_failed")):
        mine = [e for e in events if e.get("run_id") == row.run_id]
        assert [e["event"] for e in mine] == ["job_started", final]
        for event in mine:
            assert event["job_id"] == row.job_id
            assert event["trace_id"] == row.trace_id
            assert row.trace_id
            assert event["status"] in ("running", row.status.value)
            assert event["timestamp"].endswith("Z")
        assert mine[1]["duration_s"] == pytest.approx(row.duration_s)
    failed = next(e for e in events if e["event"] == "job_failed")
    assert failed["level"] == "error"
    assert failed["error_type"] == "ValueError"
    assert "invoice 42 could not be synced" in failed["exception"]


def test_missed_skipped_and_interrupted_runs_are_one_event_each(make: Any, tmp_path: Path) -> None:
    """A misfire logs job_missed, a fire time blocked by max_instances job_skipped, and a run
    cut short by close() job_interrupted — each once, written to the log file (APScheduler's
    own warnings of the missed and skipped fire times, which said them again, are dropped)."""
    path = tmp_path / "tracker.jsonl"
    configure_logging("json", file=path)
    tracker = make(logs=True)
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(
            chatty_job,
            "date",
            run_date=datetime.now(UTC) - timedelta(minutes=5),
            id="late",
            misfire_grace_time=1,
        )
        scheduler.add_job(
            blocking_job,
            "interval",
            seconds=0.05,
            id="busy",
            max_instances=1,
            next_run_time=datetime.now(UTC),
        )
        assert DONE.wait(10)
        wait_for(lambda: tracker.executions(job_id="busy", status="skipped"))
        wait_for(lambda: tracker.executions(job_id="late", status="missed"))
        scheduler.pause()
        tracker.close(timeout=5)  # the blocked run is still in progress
    finally:
        RELEASE.set()
        scheduler.shutdown()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_name.setdefault(str(event["event"]), []).append(event)
    # (A busy machine may hold the scheduler past the blocked job's next fire time: APScheduler
    # then coalesces its first two into one run, which is logged as job_missed too, once.)
    late = [e for e in by_name["job_missed"] if e["job_id"] == "late"]
    coalesced = [e for e in by_name["job_missed"] if e["job_id"] != "late"]
    assert all(e["job_id"] == "busy" and e["coalesced"] >= 1 for e in coalesced), coalesced
    (missed,) = late
    assert missed["level"] == "warning"
    assert missed["reason"]
    skipped = by_name["job_skipped"]
    assert skipped
    assert {e["job_id"] for e in skipped} == {"busy"}
    assert len({e["run_id"] for e in skipped}) == len(skipped)
    again = [
        e["event"]
        for e in events
        if "was missed by" in str(e["event"]) or "skipped: maximum number" in str(e["event"])
    ]
    assert again == []
    (interrupted,) = by_name["job_interrupted"]
    assert interrupted["job_id"] == "busy"
    assert interrupted["status"] == "interrupted"
    started = [e for e in by_name["job_started"] if e["run_id"] == interrupted["run_id"]]
    assert len(started) == 1


def test_timed_out_run_is_one_error_event(make: Any) -> None:
    """A run past its max_runtime logs job_started then one job_timed_out at error level."""
    out = io.StringIO()
    configure_logging("json", stream=out)
    tracker = make(logs=True)
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(overrunning_job, "date", run_date=datetime.now(UTC), id="slow")
        (row,) = _finished(tracker, "slow")
    finally:
        scheduler.shutdown()
    mine = [e for e in _lines(out) if e.get("run_id") == row.run_id]
    assert [e["event"] for e in mine] == ["job_started", "job_timed_out"]
    assert mine[1]["level"] == "error"
    assert mine[1]["duration_s"] >= 0.6


def test_job_lines_carry_run_ids_in_thread_pool_and_async_jobs(make: Any) -> None:
    """structlog and stdlib lines a job writes (pool thread and asyncio) carry its run's ids."""
    out = io.StringIO()
    configure_logging("json", stream=out)
    tracker = make(tracing=True, tracer_provider=PROVIDER, logs=True)
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(chatty_job, "date", run_date=datetime.now(UTC), id="sync")
        (sync_row,) = _finished(tracker, "sync")
    finally:
        scheduler.shutdown()
    DONE.clear()

    async def main() -> None:
        aio = AsyncIOScheduler(timezone="UTC")
        tracker.instrument(aio)
        aio.start()
        aio.add_job(async_chatty_job, "date", run_date=datetime.now(UTC), id="async")
        await asyncio.get_running_loop().run_in_executor(None, DONE.wait, 10)
        aio.shutdown(wait=False)

    asyncio.run(main())
    (async_row,) = _finished(tracker, "async")
    lines = _lines(out)
    for row, texts in (
        (sync_row, ("syncing invoices", "stdlib line from a thread")),
        (async_row, ("async structlog line", "async stdlib line")),
    ):
        for text in texts:
            (line,) = [e for e in lines if e["event"] == text]
            assert line["job_id"] == row.job_id
            assert line["run_id"] == row.run_id
            assert line["trace_id"] == row.trace_id
    outside = logging.getLogger("billing.stdlib")
    outside.warning("after the runs")
    assert "run_id" not in _lines(out)[-1]


@tracked_job
async def _starts_a_watcher(
    go: asyncio.Event, seen: list[object], tracer: Any
) -> asyncio.Task[None]:
    async def watcher() -> None:  # outlives the run (fire and forget)
        await go.wait()
        seen.append(current_run())
        structlog.get_logger("billing").warning("watcher tick")
        logging.getLogger("billing.stdlib").warning("watcher stdlib tick")
        with tracer.start_as_current_span("watcher-work"):
            pass

    return asyncio.get_running_loop().create_task(watcher())


def test_a_task_that_outlives_its_run_does_not_carry_the_run(make: Any) -> None:
    """A task started in a run inherits a copy of its context, which still holds the run after
    it ended: there, ``current_run()`` is None, log lines carry no run ids, and spans begin a
    trace of their own instead of nesting under the ended run's span."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = io.StringIO()
    configure_logging("json", stream=out)
    tracker = make(tracing=True, tracer_provider=provider, logs=True)
    seen: list[object] = []

    async def main() -> None:
        go = asyncio.Event()
        task = await _starts_a_watcher(go, seen, provider.get_tracer("billing"))
        go.set()
        await task

    asyncio.run(main())
    assert tracker.flush(10)
    (run,) = tracker.executions(job_id=_starts_a_watcher.__qualname__)
    assert run.status is Status.SUCCEEDED
    assert seen == [None]
    for text in ("watcher tick", "watcher stdlib tick"):
        (line,) = [e for e in _lines(out) if e["event"] == text]
        assert "run_id" not in line and "job_id" not in line
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "watcher-work"]
    assert span.parent is None
    assert span.context.trace_id != int(run.trace_id or "0", 16)


def test_apscheduler_records_go_through_the_same_json_pipeline(make: Any) -> None:
    """APScheduler's own stdlib records come out as JSON lines with their logger name."""
    out = io.StringIO()
    configure_logging("json", stream=out)
    logging.getLogger("apscheduler").setLevel(logging.INFO)
    tracker = make(logs=True)
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(chatty_job, "date", run_date=datetime.now(UTC), id="sync")
        _finished(tracker, "sync")
    finally:
        scheduler.shutdown()
    lines = _lines(out)
    running = [e for e in lines if str(e["event"]).startswith('Running job "chatty_job')]
    assert running
    assert running[0]["logger"] == "apscheduler.executors.default"
    assert running[0]["level"] == "info"
    assert running[0]["timestamp"].endswith("Z")


@pytest.mark.parametrize("func", [failing_job, plain_failing_job], ids=["tracked", "undecorated"])
def test_a_failure_is_reported_once(make: Any, func: Any) -> None:
    """A failing job's traceback appears once (job_failed), not again from APScheduler."""
    out = io.StringIO()
    configure_logging("json", stream=out)
    logging.getLogger("apscheduler").setLevel(logging.INFO)
    tracker = make(logs=True)
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(func, "date", run_date=datetime.now(UTC), id="fail")
        (row,) = _finished(tracker, "fail")
    finally:
        scheduler.shutdown()
    lines = _lines(out)
    with_traceback = [e for e in lines if f"in {func.__name__}" in str(e.get("exception", ""))]
    assert [e["event"] for e in with_traceback] == ["job_failed"]
    assert with_traceback[0]["run_id"] == row.run_id
    assert not [e for e in lines if "raised an exception" in str(e["event"])]


def test_apscheduler_still_reports_failures_when_no_tracker_logs_them(make: Any) -> None:
    """Without logs=True APScheduler's own error record is left alone."""
    out = io.StringIO()
    configure_logging("json", stream=out)
    tracker = make()
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(failing_job, "date", run_date=datetime.now(UTC), id="fail")
        _finished(tracker, "fail")
    finally:
        scheduler.shutdown()
    errors = [e for e in _lines(out) if "raised an exception" in str(e["event"])]
    assert len(errors) == 1
    assert "invoice 42" in errors[0]["exception"]


def test_console_format_is_readable_and_chosen_by_setting(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRACKER_LOG_FORMAT=console gives key=value lines instead of JSON."""
    monkeypatch.setenv("TRACKER_LOG_FORMAT", "console")
    out = io.StringIO()
    configure_logging(stream=out)
    tracker = make(logs=True)
    scheduler = _scheduler(tracker)
    try:
        scheduler.add_job(chatty_job, "date", run_date=datetime.now(UTC), id="sync")
        (row,) = _finished(tracker, "sync")
    finally:
        scheduler.shutdown()
    text = out.getvalue()
    line = next(x for x in text.splitlines() if "job_succeeded" in x)
    assert not line.lstrip().startswith("{")
    assert f"run_id={row.run_id}" in line
    assert "job_id=sync" in line
    assert "\x1b[" not in text  # no colours when not writing to a terminal


def test_own_structlog_config_gets_lifecycle_events_and_run_ids(make: Any) -> None:
    """Without configure_logging, a structlog config that merges contextvars still sees the
    run ids on the job's lines, and the lifecycle events as event dicts."""
    tracker = make(logs=True)
    scheduler = _scheduler(tracker)
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as captured:
        try:
            scheduler.add_job(chatty_job, "date", run_date=datetime.now(UTC), id="sync")
            (row,) = _finished(tracker, "sync")
        finally:
            scheduler.shutdown()
    (line,) = [e for e in captured if e["event"] == "syncing invoices"]
    assert line["run_id"] == row.run_id
    assert line["job_id"] == "sync"
    assert [
        e["event"]
        for e in captured
        if e.get("run_id") == row.run_id and e["event"].startswith("job_")
    ] == ["job_started", "job_succeeded"]
    assert structlog.contextvars.get_contextvars() == {}


def test_run_context_filter_for_an_own_stdlib_config(sqlite_url: str) -> None:
    """RunContextFilter puts the run's ids on stdlib records for any formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RunContextFilter())
    handler.setFormatter(
        logging.Formatter(
            "%(message)s run=%(run_id)s job=%(job_id)s", defaults={"run_id": "-", "job_id": "-"}
        )
    )
    log = logging.getLogger("own.config")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    seen: list[str] = []

    @tracked_job
    def report() -> None:
        run = current_run()
        assert run is not None
        seen.append(run.run_id)
        log.info("inside")

    tracker = Tracker(sqlite_url, metrics=False)
    try:
        report()
        log.info("outside")
    finally:
        tracker.close(timeout=1)
        log.removeHandler(handler)
    inside, outside = out.getvalue().splitlines()
    assert inside == f"inside run={seen[0]} job={report.__qualname__}"
    assert outside == "outside run=- job=-"


def test_configure_logging_replaces_only_its_own_handler() -> None:
    """Calling configure_logging twice leaves one tracker handler and the user's handlers."""
    root = logging.getLogger()
    mine = logging.NullHandler()
    root.addHandler(mine)
    configure_logging("json", stream=io.StringIO())
    configure_logging("json", stream=io.StringIO())
    ours = [h for h in root.handlers if getattr(h, "_tracker_handler", False)]
    assert len(ours) == 1
    assert mine in root.handlers


def test_reconfiguring_reaches_loggers_already_in_use(tmp_path: Path) -> None:
    """A module-level logger used under one configure_logging call follows a later call."""
    log = structlog.get_logger("module.level")
    configure_logging("json", file=tmp_path / "first.jsonl")
    log.info("first")
    configure_logging("json", file=tmp_path / "second.jsonl")
    log.info("second")
    first = (tmp_path / "first.jsonl").read_text().splitlines()
    second = (tmp_path / "second.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in first] == ["first"]
    assert [json.loads(line)["event"] for line in second] == ["second"]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"lateness_s": None, "tags": {"team": "billing"}},
        {
            "status": Status.FAILED,
            "error_type": "ValueError",
            "error_message": "ledger 7 is locked",
            "traceback": "Traceback (most recent call last): ...",
        },
    ],
)
def test_a_runs_started_event_has_the_runs_identity_and_fire_time(
    changes: dict[str, Any],
) -> None:
    """A ``job_started`` event carries the run's ids, fire time, lateness and origin, in that
    order, whether made from the record or from a short run's final event."""
    from tracker.sinks.logs import _final_fields, _started_from, lifecycle_event

    now = datetime.now(UTC)
    record = Execution(
        run_id="0190a0b1-c2d3-7e4f-8a9b-0c1d2e3f4a5b",
        job_id="nightly",
        job_name="nightly_report",
        status=Status.SUCCEEDED,
        scheduled_at=now - timedelta(seconds=2),
        started_at=now - timedelta(seconds=1),
        finished_at=now,
        duration_s=1.0,
        lateness_s=1.0,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    ).evolve(**changes)
    expected = {
        "job_id": "nightly",
        "job_name": "nightly_report",
        "run_id": "0190a0b1-c2d3-7e4f-8a9b-0c1d2e3f4a5b",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "status": "running",
        "scheduled_at": record.scheduled_at.isoformat(),
    }
    if record.lateness_s is not None:
        expected["lateness_s"] = 1.0
    expected["origin"] = "scheduled"
    name, level, fields = lifecycle_event(record, started=True)
    assert (name, level) == ("job_started", "info")
    assert list(fields.items()) == list(expected.items())
    derived = _started_from(_final_fields(record))
    assert list(derived.items()) == list(expected.items())


def test_json_lines_fall_back_for_values_orjson_refuses() -> None:
    """Integers past 64 bits and non-string keys still render (standard library fallback);
    unknown objects render as their str()."""
    from tracker.sinks.logs import _dumps

    class Ledger:
        def __str__(self) -> str:
            return "ledger-7"

    assert json.loads(_dumps({"big": 2**70, "obj": Ledger()})) == {"big": 2**70, "obj": "ledger-7"}
    assert json.loads(_dumps({1: "one"})) == {"1": "one"}


def test_an_error_message_that_is_not_utf8_does_not_lose_the_log_lines(tmp_path: Path) -> None:
    """An undecodable file name in an error message (a lone surrogate, as ``os.fsdecode`` makes
    it) cannot be written as UTF-8: its line is written escaped, and neither it nor the other
    runs' lines of the batch are lost."""
    log_file = tmp_path / "runs.jsonl"
    configure_logging("json", file=str(log_file))
    tracker = Tracker(
        f"sqlite:///{tmp_path}/t.sqlite3", settings=TrackerSettings(flush_interval=0.02), logs=True
    )

    @tracked_job
    def load_file() -> None:
        raise FileNotFoundError("no such file: 'caf\udce9.txt'")

    @tracked_job
    def report() -> None:
        return None

    try:
        with pytest.raises(FileNotFoundError):
            load_file()
        report()
        assert tracker.flush()
    finally:
        tracker.close()
    events = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    # a direct call's job id is the function's qualified name
    lifecycle = [(e["event"], e["job_id"].split(".")[-1]) for e in events if "job_id" in e]
    assert lifecycle == [
        ("job_started", "load_file"),
        ("job_failed", "load_file"),
        ("job_started", "report"),
        ("job_succeeded", "report"),
    ]
    failed = next(e for e in events if e["event"] == "job_failed")
    assert failed["error_message"] == "no such file: 'caf\udce9.txt'"
