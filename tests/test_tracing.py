"""OpenTelemetry spans of runs: real SDK (in-memory exporter), real schedulers, real OTLP/HTTP."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from support import wait_for

from tracker import Origin, Status, Tracker, TrackerSettings, configure_otlp_from_env, tracked_job

PROVIDER = TracerProvider(shutdown_on_exit=False)
EXPORTER = InMemorySpanExporter()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
APP = PROVIDER.get_tracer("app")
"""What the job's own code (an HTTP client, a database driver) would trace with."""

DONE = threading.Event()


@tracked_job
def traced_job() -> None:
    with APP.start_as_current_span("child-sync"):
        pass
    DONE.set()


@tracked_job
async def async_traced_job() -> None:
    with APP.start_as_current_span("child-async"):
        await asyncio.sleep(0)
    DONE.set()


@tracked_job
def broken_job() -> None:
    DONE.set()
    raise ValueError("ledger 7 is locked")


@tracked_job(max_runtime=0.05)
def overrunning_job() -> None:
    time.sleep(0.6)


def plain_broken_job() -> None:
    DONE.set()
    raise KeyError("no such account")


@pytest.fixture(autouse=True)
def _clean() -> None:
    EXPORTER.clear()
    DONE.clear()


@pytest.fixture
def traced(sqlite_url: str) -> Iterator[Tracker]:
    tracker = Tracker(
        sqlite_url,
        settings=TrackerSettings(flush_interval=0.02),
        metrics=False,
        tracing=True,
        tracer_provider=PROVIDER,
    )
    yield tracker
    tracker.close(timeout=5)


def _background(tracker: Tracker, workers: int = 2) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(workers)}, timezone="UTC"
    )
    tracker.instrument(scheduler)
    scheduler.start()
    return scheduler


def _spans(
    name: str | None = None, exporter: InMemorySpanExporter = EXPORTER
) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if name is None or s.name == name]


def _run_once(
    tracker: Tracker, func: Any, job_id: str = "job", exporter: InMemorySpanExporter = EXPORTER
) -> ReadableSpan:
    scheduler = _background(tracker)
    try:
        scheduler.add_job(func, "date", run_date=datetime.now(UTC), id=job_id)
        span = wait_for(lambda: _spans(func.__name__, exporter))[0]  # the run has ended
        assert tracker.flush(10)
    finally:
        scheduler.shutdown()
    return span


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def test_scheduled_run_is_a_root_span_with_its_attributes(traced: Tracker) -> None:
    """A scheduled run's span is a root named after the job, with job/run/fire-time attributes."""
    span = _run_once(traced, traced_job, "nightly-report")
    assert span.parent is None
    attributes = dict(span.attributes or {})
    assert attributes["jobtracker.job.id"] == "nightly-report"
    assert span.name == "traced_job"
    assert attributes["jobtracker.run.origin"] == "scheduled"
    assert attributes["jobtracker.run.status"] == "succeeded"
    assert datetime.fromisoformat(str(attributes["jobtracker.run.scheduled_at"])).tzinfo
    assert float(attributes["jobtracker.run.lateness_s"]) >= 0  # type: ignore[arg-type]
    row = traced.execution(str(attributes["jobtracker.run.id"]))
    assert row is not None
    assert row.status is Status.SUCCEEDED
    assert span.status.status_code is StatusCode.UNSET


def test_job_spans_nest_under_the_run_span_in_a_thread_pool_job(traced: Tracker) -> None:
    """A span the job's own code opens in a pool thread is a child of the run's span."""
    run_span = _run_once(traced, traced_job)
    child = _spans("child-sync")[0]
    assert child.parent is not None
    assert child.parent.span_id == run_span.context.span_id
    assert child.context.trace_id == run_span.context.trace_id


def test_job_spans_nest_under_the_run_span_in_an_async_job(traced: Tracker) -> None:
    """In an asyncio job the job's spans nest under the run, which is a root even though the
    job was added while a request span was current (asyncio copies that context into the task)."""

    async def main() -> None:
        scheduler = AsyncIOScheduler(timezone="UTC")
        traced.instrument(scheduler)
        scheduler.start()
        with APP.start_as_current_span("request"):
            scheduler.add_job(async_traced_job, "date", run_date=datetime.now(UTC), id="a")
        await asyncio.get_running_loop().run_in_executor(None, DONE.wait, 10)
        await asyncio.sleep(0.05)
        scheduler.shutdown(wait=False)

    asyncio.run(main())
    assert traced.flush(10)
    run_span = wait_for(lambda: _spans("async_traced_job"))[0]
    request = _spans("request")[0]
    child = _spans("child-async")[0]
    assert run_span.parent is None
    assert run_span.context.trace_id != request.context.trace_id
    assert child.parent is not None
    assert child.parent.span_id == run_span.context.span_id


def test_failed_run_records_the_exception_once_with_error_status(traced: Tracker) -> None:
    """A failing run's span has one exception event and status ERROR naming the error."""
    span = _run_once(traced, broken_job)
    exceptions = [e for e in span.events if e.name == "exception"]
    assert len(exceptions) == 1
    assert (exceptions[0].attributes or {})["exception.type"] == "ValueError"
    assert span.status.status_code is StatusCode.ERROR
    assert "ledger 7 is locked" in (span.status.description or "")
    assert (span.attributes or {})["jobtracker.run.status"] == "failed"


def test_timed_out_run_ends_its_span_in_error_without_an_exception(traced: Tracker) -> None:
    """A run the watchdog marked timed out (it returned normally) ends with status ERROR."""
    span = _run_once(traced, overrunning_job)
    assert (span.attributes or {})["jobtracker.run.status"] == "timed_out"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == []


def test_trace_and_span_ids_are_stored_on_the_run_row(database_url: str) -> None:
    """The row of a run (SQLite and PostgreSQL) carries its span's trace id and span id in hex."""
    tracker = Tracker(
        database_url,
        settings=TrackerSettings(flush_interval=0.02),
        metrics=False,
        tracing=True,
        tracer_provider=PROVIDER,
    )
    try:
        span = _run_once(tracker, broken_job)
        row = tracker.execution(str((span.attributes or {})["jobtracker.run.id"]))
        assert row is not None
        assert row.status is Status.FAILED
        assert row.trace_id == _hex(span.context.trace_id, 32)
        assert row.span_id == _hex(span.context.span_id, 16)
    finally:
        tracker.close(timeout=5)


def test_manual_run_is_a_root_that_links_to_the_request_span(traced: Tracker) -> None:
    """``run_now`` from inside a request span: the run is its own trace, linked to the request."""
    scheduler = _background(traced)
    try:
        scheduler.add_job(traced_job, "interval", hours=1, id="hourly")
        with APP.start_as_current_span("POST /jobs/hourly/run") as request:
            traced.instrument(scheduler).run_now("hourly")
        span = wait_for(lambda: _spans("traced_job"))[0]
        assert traced.flush(10)
    finally:
        scheduler.shutdown()
    assert span.parent is None
    assert (span.attributes or {})["jobtracker.run.origin"] == Origin.MANUAL.value
    assert (span.attributes or {})["jobtracker.job.id"] == "hourly"
    assert [link.context.span_id for link in span.links] == [request.get_span_context().span_id]


class _RequestSpans:
    """ASGI middleware: each HTTP request runs inside a span, as OTel's instrumentation does."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with APP.start_as_current_span(f"{scope['method']} {scope['path']}"):
            await self.app(scope, receive, send)


def test_run_from_the_http_api_links_to_the_request_span(traced: Tracker) -> None:
    """POST /jobs/{id}/run under a request span: the run is a root linked to that request."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from tracker.integrations.fastapi import ApiSettings, tracker_lifespan, tracker_router

    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(traced_job, "interval", hours=1, id="hourly")
    app = FastAPI(lifespan=tracker_lifespan(traced, scheduler, close_tracker=False))
    app.include_router(tracker_router(settings=ApiSettings(token=SecretStr("t0ken"))))
    app.add_middleware(_RequestSpans)
    with TestClient(app) as client:
        response = client.post("/jobs/hourly/run", headers={"Authorization": "Bearer t0ken"})
        assert response.status_code == 202, response.text
        span = wait_for(lambda: _spans("traced_job"))[0]
    request = _spans("POST /jobs/hourly/run")[0]
    assert span.parent is None
    assert (span.attributes or {})["jobtracker.run.origin"] == "manual"
    assert [link.context.span_id for link in span.links] == [request.context.span_id]
    assert span.context.trace_id != request.context.trace_id


def test_direct_call_links_to_the_callers_span(traced: Tracker) -> None:
    """Calling a tracked function directly under a span makes a root run span linked to it."""
    with APP.start_as_current_span("caller") as caller:
        traced_job()
    span = wait_for(lambda: _spans("traced_job"))[0]  # built off the job's path, soon after
    assert span.parent is None
    assert (span.attributes or {})["jobtracker.run.origin"] == "direct"
    assert span.links[0].context.span_id == caller.get_span_context().span_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # our context was detached


def test_undecorated_job_gets_a_span_after_the_fact(traced: Tracker) -> None:
    """A job without @tracked_job still gets a span, from its recorded start to its end."""
    span = _run_once(traced, plain_broken_job, "plain")
    assert span.parent is None
    assert (span.attributes or {})["jobtracker.job.id"] == "plain"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= span.end_time
    # Its ids are on its row, as any run's (they used to be missing for undecorated jobs).
    assert traced.flush()
    (row,) = traced.executions(job_id="plain")
    assert row.trace_id == f"{span.context.trace_id:032x}"
    assert row.span_id == f"{span.context.span_id:016x}"


# -- the run's span is built off the job's path ------------------------------------------


@tracked_job
def annotating_job() -> None:
    """Records on the run's span what jobs commonly record on the current span."""
    span = trace.get_current_span()
    span.set_attribute("ledger.rows", 3)
    span.add_event("checkpoint", {"step": "fetched"})
    span.set_attributes({"ledger.name": "eu"})
    with APP.start_as_current_span("child-sync"):
        pass
    DONE.set()


class _OnStart(SimpleSpanProcessor):
    """A processor that acts on span start (as vendor processors do): it sees a real span."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        span.set_attribute("seen.on_start", True)


def _own_provider(**options: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(shutdown_on_exit=False, **options)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _tracker(url: str, provider: TracerProvider) -> Tracker:
    return Tracker(
        url,
        settings=TrackerSettings(flush_interval=0.02),
        metrics=False,
        tracing=True,
        tracer_provider=provider,
    )


def test_what_the_job_records_on_its_run_span_reaches_the_span(traced: Tracker) -> None:
    """Attributes and events the job sets on the current span land on the run's span, with
    the time they happened, next to the tracker's own attributes."""
    span = _run_once(traced, annotating_job)
    attributes = dict(span.attributes or {})
    assert attributes["ledger.rows"] == 3
    assert attributes["ledger.name"] == "eu"
    assert attributes["jobtracker.run.status"] == "succeeded"
    [event] = [e for e in span.events if e.name == "checkpoint"]
    assert dict(event.attributes or {}) == {"step": "fetched"}
    assert span.start_time is not None and span.end_time is not None
    assert span.start_time <= event.timestamp <= span.end_time
    child = _spans("child-sync")[0]
    assert child.parent is not None and child.parent.span_id == span.context.span_id


def test_a_processor_acting_on_start_gets_the_same_span(sqlite_url: str) -> None:
    """With a processor that acts on start, the span goes through the SDK's own start and end:
    the processor sees it, and the span has the same ids, name, times and attributes as one
    built the quick way."""
    quick_provider, quick = _own_provider()
    full_provider, full = _own_provider()
    full_provider.add_span_processor(_OnStart(InMemorySpanExporter()))
    spans = []
    for provider, exporter in ((quick_provider, quick), (full_provider, full)):
        tracker = _tracker(sqlite_url, provider)
        try:
            span = _run_once(tracker, traced_job, "same", exporter)
            spans.append(span)
            runs = tracker.executions(job_id="same")
            assert format(span.context.span_id, "016x") == runs[0].span_id
            assert format(span.context.trace_id, "032x") == runs[0].trace_id
        finally:
            tracker.close(timeout=5)
    quick_span, full_span = spans
    assert dict(full_span.attributes or {}).pop("seen.on_start") is True
    quick_attributes = dict(quick_span.attributes or {})
    full_attributes = {
        k: v for k, v in (full_span.attributes or {}).items() if k != "seen.on_start"
    }
    assert set(quick_attributes) == set(full_attributes)
    for key in ("jobtracker.job.id", "jobtracker.run.origin", "jobtracker.run.status"):
        assert quick_attributes[key] == full_attributes[key]
    for span in spans:
        assert span.name == "traced_job"
        assert span.parent is None
        assert span.kind is trace.SpanKind.INTERNAL
        assert span.status.status_code is StatusCode.UNSET
        assert span.start_time is not None and span.end_time is not None
        assert 0 <= span.end_time - span.start_time < 5e9
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "tracker"


def test_runs_the_sampler_drops_have_no_span_and_their_children_are_not_sampled(
    sqlite_url: str,
) -> None:
    """The provider's sampler decides on the job's path: a dropped run exports nothing, and
    the job's own spans follow the decision (parent-based)."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    provider, exporter = _own_provider(sampler=ParentBased(ALWAYS_OFF))
    tracker = _tracker(sqlite_url, provider)
    try:
        scheduler = _background(tracker)
        try:
            scheduler.add_job(traced_job, "date", run_date=datetime.now(UTC), id="dropped")
            assert DONE.wait(10)
            assert tracker.flush(10)
        finally:
            scheduler.shutdown()
        assert tracker.executions(job_id="dropped")[0].status is Status.SUCCEEDED
        assert exporter.get_finished_spans() == ()
    finally:
        tracker.close(timeout=5)


def test_a_sampler_reading_attributes_is_given_the_runs_attributes(sqlite_url: str) -> None:
    """A custom sampler sees the run's attributes on the job's path (here it drops one job)."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class DropNoisy(Sampler):
        def should_sample(
            self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any
        ) -> SamplingResult:
            attributes = args[1] if len(args) > 1 else kwargs.get("attributes")
            noisy = (attributes or {}).get("jobtracker.job.id") == "noisy"
            decision = Decision.DROP if noisy else Decision.RECORD_AND_SAMPLE
            kept = None if noisy else {**(attributes or {}), "sampled.by": "DropNoisy"}
            return SamplingResult(decision, kept)

        def get_description(self) -> str:
            return "DropNoisy"

    provider, exporter = _own_provider(sampler=DropNoisy())
    tracker = _tracker(sqlite_url, provider)
    try:
        for job_id in ("noisy", "quiet"):
            DONE.clear()
            scheduler = _background(tracker)
            try:
                scheduler.add_job(traced_job, "date", run_date=datetime.now(UTC), id=job_id)
                assert DONE.wait(10)
                assert tracker.flush(10)
            finally:
                scheduler.shutdown()
        runs = [s for s in exporter.get_finished_spans() if s.name == "traced_job"]
        assert [dict(s.attributes or {})["jobtracker.job.id"] for s in runs] == ["quiet"]
        assert dict(runs[0].attributes or {})["sampled.by"] == "DropNoisy"
    finally:
        tracker.close(timeout=5)


# -- through the real OTLP/HTTP exporter ---------------------------------------------------


class _Receiver(ThreadingHTTPServer):
    requests: list[ExportTraceServiceRequest]
    paths: list[str]


class _OtlpHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append(request)
        self.server.paths.append(self.path)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(("127.0.0.1", 0), _OtlpHandler)
    server.requests, server.paths = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_spans_reach_an_otlp_http_receiver_configured_from_otel_env(
    sqlite_url: str, receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configure_otlp_from_env() + close(): the run's span arrives over OTLP/HTTP, decoded."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-worker")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # only close() can send it in time
    provider = configure_otlp_from_env(set_global=False)
    tracker = Tracker(
        sqlite_url,
        settings=TrackerSettings(flush_interval=0.02),
        metrics=False,
        tracing=True,
        tracer_provider=provider,
    )
    try:
        scheduler = _background(tracker)
        scheduler.add_job(broken_job, "date", run_date=datetime.now(UTC), id="ledger")
        assert DONE.wait(10)
        wait_for(lambda: tracker.executions(job_id="ledger", status="failed"))
        scheduler.shutdown()
        row = tracker.executions(job_id="ledger")[0]
    finally:
        tracker.close(timeout=10)
    try:
        assert receiver.paths
        assert set(receiver.paths) == {"/v1/traces"}
        resource_spans = [rs for r in receiver.requests for rs in r.resource_spans]
        service = {a.key: a.value.string_value for a in resource_spans[0].resource.attributes}
        assert service["service.name"] == "billing-worker"
        spans = [s for rs in resource_spans for ss in rs.scope_spans for s in ss.spans]
        (span,) = [s for s in spans if s.name == "broken_job"]
        assert span.trace_id.hex() == row.trace_id
        assert span.span_id.hex() == row.span_id
        assert span.parent_span_id == b""
        attributes = {a.key: a.value for a in span.attributes}
        assert attributes["jobtracker.run.id"].string_value == row.run_id
        assert attributes["jobtracker.job.id"].string_value == "ledger"
        assert attributes["jobtracker.run.status"].string_value == "failed"
        assert span.status.code == span.status.STATUS_CODE_ERROR
        assert [e.name for e in span.events] == ["exception"]
    finally:
        provider.shutdown()


@pytest.mark.parametrize("processor", [BatchSpanProcessor, SimpleSpanProcessor])
def test_close_does_not_hang_on_an_exporter_that_never_answers(
    sqlite_url: str, processor: Any
) -> None:
    """With a collector that accepts but never answers, close(timeout=1) returns promptly —
    also with the simple processor, which exports each span as it is built."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the kernel; nothing ever reads or answers
    port = silent.getsockname()[1]
    provider = TracerProvider(shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=15)
    provider.add_span_processor(processor(exporter))
    tracker = _tracker(sqlite_url, provider)
    try:
        scheduler = _background(tracker)
        scheduler.add_job(traced_job, "interval", seconds=0.05, id="stuck-export")
        wait_for(lambda: len(tracker.executions(job_id="stuck-export", status="succeeded")) >= 3)
        scheduler.shutdown()
        started = time.monotonic()
        tracker.close(timeout=1)
        assert time.monotonic() - started < 4  # the exporter alone would wait 15 s a span
        assert tracker.executions(job_id="stuck-export")[0].status is Status.SUCCEEDED
    finally:
        # Stopped here, not left retrying into a later test: the exporter logs its failure at
        # ERROR, which the Sentry of a test running by then counts as one of its events.
        exporter.shutdown()  # (first: its retries stop waiting)
        silent.close()  # the exports in flight fail now (their connections are reset)
        provider.shutdown()


class _GatedExporter(SpanExporter):
    """An exporter stuck until ``gate`` is set (a collector that hangs, then recovers)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.wait()
        self.exported.extend(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.gate.wait()


def test_close_warns_with_the_time_it_waited_for_a_stuck_exporter(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning of a close() that could not flush tells how long it waited, not the last
    tenth of a second of it."""
    exporter = _GatedExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracker = _tracker(sqlite_url, provider)
    try:
        _run_once_without_flush(tracker, "gated")
        caplog.set_level(logging.WARNING, logger="tracker.tracing")
        tracker.close(timeout=1.5)
    finally:
        exporter.gate.set()
    (message,) = [r.getMessage() for r in caplog.records if r.name == "tracker.tracing"]
    waited = re.search(r"not flushed within ([0-9.]+) s", message)
    assert waited is not None, message
    assert 1.3 <= float(waited[1]) <= 2.5


def _run_once_without_flush(tracker: Tracker, job_id: str) -> None:
    scheduler = _background(tracker)
    try:
        scheduler.add_job(traced_job, "date", run_date=datetime.now(UTC), id=job_id)
        wait_for(lambda: tracker.executions(job_id=job_id, status="succeeded"))
    finally:
        scheduler.shutdown()


def test_a_run_ending_after_close_never_waits_for_the_exporter() -> None:
    """Once the sink closed, a run that still ends hands its span to the span builder's thread:
    the job returns at once although the (simple) processor's exporter hangs; the span is
    exported when the exporter recovers."""
    from tracker._run import Run
    from tracker.sinks.tracing import TracingHook, TracingSink

    exporter = _GatedExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    hook = TracingHook(provider)
    sink = TracingSink(provider, hook.deferred)
    run = Run(None, "late", "late", datetime.now(UTC), "test", Origin.SCHEDULED)
    token = hook.enter(run)
    try:
        sink.close(timeout=0.2)
        ended = threading.Thread(target=hook.exit, args=(run, token, Status.SUCCEEDED, None))
        started = time.monotonic()
        ended.start()
        ended.join(5)
        assert not ended.is_alive()
        assert time.monotonic() - started < 1
        assert exporter.exported == []
    finally:
        exporter.gate.set()
    (span,) = wait_for(lambda: exporter.exported)
    assert span.name == "late"
    assert span.context.span_id == int(run.span_id or "0", 16)


@pytest.mark.parametrize(("trace_id", "span_id"), [(1, 1), (2**128 - 1, 2**64 - 1), (0, 5), (5, 0)])
def test_the_stand_ins_context_is_the_one_the_api_would_make(trace_id: int, span_id: int) -> None:
    """The stand-in's context, built without the API's argument checks, equals the API's own
    (validity included) for valid and invalid ids."""
    from opentelemetry.trace import SpanContext, TraceFlags

    from tracker.sinks.deferred_spans import _span_context

    flags = TraceFlags(1)
    made = _span_context(trace_id, span_id, flags, None)
    expected = SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags)
    assert made == expected
    assert made.is_valid is expected.is_valid
    assert made.trace_state == expected.trace_state


def test_spans_waiting_to_be_built_are_bounded_and_drops_counted() -> None:
    """Ended runs wait for the sink's thread in a bounded queue: past it, their spans are
    dropped and counted (the job never waits); after the sink closed, the run itself asks the
    span builder for its span."""
    from tracker._run import Run
    from tracker.sinks.tracing import TracingHook

    provider, exporter = _own_provider()
    hook = TracingHook(provider)
    deferred = hook.deferred
    assert deferred is not None
    drops: list[int] = []
    deferred.capacity = 1
    deferred.on_drop = lambda sink, count: drops.append(count)

    def run_once(job_id: str) -> None:
        run = Run(None, job_id, job_id, datetime.now(UTC), "test", Origin.SCHEDULED)
        hook.exit(run, hook.enter(run), Status.SUCCEEDED, None)

    for job_id in ("a", "b", "c"):
        run_once(job_id)
    assert drops == [1, 1]
    assert exporter.get_finished_spans() == ()  # nothing built on the job's path
    deferred.realize_pending()
    assert [s.name for s in exporter.get_finished_spans()] == ["a"]
    deferred.closed = True
    run_once("late")
    assert deferred.builder.wait(5)  # built by the span builder's thread, not the job's
    assert [s.name for s in exporter.get_finished_spans()] == ["a", "late"]


class _SlowExporter(SpanExporter):
    """An exporter slower than runs end (2 ms a batch): a batch processor's queue fills."""

    def __init__(self) -> None:
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(0.002)
        self.exported.extend(spans)
        return SpanExportResult.SUCCESS


def plain_quick_job() -> None:
    pass


@tracked_job
def quick_job() -> None:
    pass


def test_a_burst_of_runs_loses_no_span_to_a_full_batch_processor(sqlite_url: str) -> None:
    """More runs end at once than the batch processor's queue holds (16 here, 2,048 by
    default) while its exporter is slower: the spans wait for room instead of being dropped
    by the processor — of decorated runs and of undecorated ones alike."""
    exporter = _SlowExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=16, max_export_batch_size=8)
    )
    tracker = _tracker(sqlite_url, provider)
    try:
        for _ in range(300):
            quick_job()  # direct calls: each a run, with its span
        scheduler = _background(tracker, workers=4)
        try:
            now = datetime.now(UTC)
            for i in range(100):
                scheduler.add_job(plain_quick_job, "date", run_date=now, id=f"undecorated-{i}")
            wait_for(lambda: len(tracker.executions(limit=1000)) >= 400, timeout=30)
        finally:
            scheduler.shutdown()
        assert tracker.flush(30)
        runs = tracker.executions(limit=1000)
    finally:
        tracker.close(timeout=10)
        provider.shutdown()
    assert len(runs) == 400
    spans = {f"{s.context.span_id:016x}": s for s in exporter.exported}
    assert {r.span_id for r in runs} <= spans.keys()
    assert sorted(s.name for s in spans.values()).count("plain_quick_job") == 100


def test_span_limits_of_the_provider_apply_to_run_spans(sqlite_url: str) -> None:
    """A provider that keeps fewer attributes than a run span has: the span goes through the
    SDK's own span, which keeps what the limit allows and counts the rest as dropped."""
    from opentelemetry.sdk.trace import SpanLimits

    provider, exporter = _own_provider(span_limits=SpanLimits(max_span_attributes=3))
    tracker = _tracker(sqlite_url, provider)
    try:
        span = _run_once(tracker, traced_job, "limited", exporter)
    finally:
        tracker.close(timeout=5)
    assert len(span.attributes or {}) == 3
    assert span.dropped_attributes == 3


def test_a_run_cut_short_by_close_leaves_nothing_current_on_its_thread(sqlite_url: str) -> None:
    """``close()`` records a run still in progress as interrupted, from the closing thread. When
    the job then returns, its own thread is left as the run found it: the pool thread's next job
    is not a child of the dead run's span, and its log lines don't carry the dead run's ids."""
    import structlog

    release, running = threading.Event(), threading.Event()
    seen: list[tuple[bool, dict[str, Any]]] = []

    @tracked_job
    def long_report() -> None:
        running.set()
        release.wait(10)

    def next_job() -> None:  # not tracked: the tracker is closed by then anyway
        valid = trace.get_current_span().get_span_context().is_valid
        seen.append((valid, structlog.contextvars.get_contextvars()))

    EXPORTER.clear()
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(1)}, timezone="UTC")
    tracker = Tracker(sqlite_url, tracing=True, tracer_provider=PROVIDER, metrics=False, logs=True)
    tracker.instrument(scheduler)
    scheduler.start()
    try:
        scheduler.add_job(long_report, id="long_report")
        assert running.wait(10)
        tracker.close()
        (span,) = [s for s in EXPORTER.get_finished_spans() if s.name.endswith("long_report")]
        assert span.attributes["jobtracker.run.status"] == "interrupted"
        release.set()
        scheduler.add_job(next_job, id="next_job")  # the same (only) pool thread
        wait_for(lambda: seen)
    finally:
        release.set()
        scheduler.shutdown()
    valid, bound = seen[0]
    assert not valid
    assert "run_id" not in bound and "job_id" not in bound
