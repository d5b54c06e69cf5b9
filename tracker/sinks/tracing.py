"""OpenTelemetry: one span per run, its ids on the run's row.

* :class:`TracingHook` runs on the job's path (in its own thread or task): it starts
  the run's span from an *empty* context — every run is a root, never a child of
  whatever request or span happened to be current — makes it current so spans the
  job's own code opens nest under it, and writes the span's ``trace_id``/``span_id``
  (hex) on the run before its ``running`` record is published. A manual run (``run_now``
  from the HTTP API) and a direct call *link* to the span that asked for them. With the
  SDK's tracer, what is current during the run is a stand-in with the span's ids and
  sampling decision, and the SDK span itself is built after the run, off the job's path
  (:mod:`tracker.sinks.deferred_spans`).
* :class:`TracingSink` runs on its own thread: it has those spans built, gives runs
  recorded only from scheduler events (jobs not decorated with ``@tracked_job``) a span
  after the fact, and flushes the provider with a timeout. Spans are built on a thread of
  their own (a processor may export as a span ends), so an exporter that hangs never
  blocks the sink's thread, a job, or :meth:`Tracker.close <tracker.Tracker.close>`
  beyond its timeout.

Span: named after the job, kind ``INTERNAL``; attributes (see ``docs/signals.md``)::

    jobtracker.job.id  jobtracker.run.id  jobtracker.run.origin
    jobtracker.run.scheduled_at (ISO 8601)  jobtracker.run.lateness_s  jobtracker.run.status

A failed run records its exception once (one ``exception`` event) and ends with status
``ERROR``; so do timed-out and interrupted runs (without an exception event when they
raised none).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import Token
from datetime import datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Tracer, TracerProvider
from opentelemetry.trace.status import Status as SpanStatus
from opentelemetry.trace.status import StatusCode

from .. import _context
from .._hub import Hub, reported_error
from .._record import Execution, Origin, Status
from .._run import Run
from .._sink import BaseSink, TrackerEvent
from .deferred_spans import ROOM_WAIT_S, DeferredSpans, SpanBuilder, StandInSpan
from .iso import iso
from .span_room import SpanRoom

__all__ = [
    "ATTR_JOB_ID",
    "ATTR_LATENESS",
    "ATTR_ORIGIN",
    "ATTR_RUN_ID",
    "ATTR_SCHEDULED_AT",
    "ATTR_STATUS",
    "TracingHook",
    "TracingSink",
    "configure_otlp_from_env",
    "enable_tracing",
    "flush_provider",
]

logger = logging.getLogger("tracker.tracing")

ATTR_JOB_ID = "jobtracker.job.id"
ATTR_RUN_ID = "jobtracker.run.id"
ATTR_ORIGIN = "jobtracker.run.origin"
ATTR_SCHEDULED_AT = "jobtracker.run.scheduled_at"
ATTR_LATENESS = "jobtracker.run.lateness_s"
ATTR_STATUS = "jobtracker.run.status"

CARRIER = "otel.context"
"""``run.extras`` key of the OpenTelemetry context current where a manual run was requested."""

_EMPTY = Context()
_ENDED_BADLY = frozenset({Status.FAILED, Status.TIMED_OUT, Status.INTERRUPTED})
_NO_SPAN = frozenset({Status.RUNNING, Status.MISSED, Status.SKIPPED})


def _tracer(provider: TracerProvider | None) -> Tracer:
    from .. import __version__

    return trace.get_tracer("tracker", __version__, tracer_provider=provider)


def _span_key() -> str | None:
    """The context key the API keeps the current span under, if setting a span in an empty
    context makes a context with that one key (checked once; else the API is asked each run)."""
    try:
        probe = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        made = trace.set_span_in_context(probe, _EMPTY)
        [key] = made
        if trace.get_current_span(Context({key: probe})) is probe:
            return key
    except Exception:
        pass
    return None


_SPAN_KEY = _span_key()


def _in_empty_context(span: trace.Span) -> Context:
    """``trace.set_span_in_context(span, Context())``, a quarter of the cost."""
    if _SPAN_KEY is None:
        return trace.set_span_in_context(span, _EMPTY)
    return Context({_SPAN_KEY: span})


def _link_to(ctx: Context | None) -> list[Link] | None:
    """A link to the span current in ``ctx``, if there is a valid one."""
    span_context = trace.get_current_span(ctx).get_span_context()
    return [Link(span_context)] if span_context.is_valid else None


def _attributes(run: Run | Execution) -> dict[str, Any]:
    return {
        ATTR_JOB_ID: run.job_id,
        ATTR_RUN_ID: run.run_id,
        ATTR_ORIGIN: run.origin._value_,
        ATTR_SCHEDULED_AT: iso(run.scheduled_at),
        ATTR_LATENESS: run.lateness_s or 0.0,
    }


def _describe(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:  # a broken __str__
        return type(error).__name__


def _end_status(
    span: trace.Span, status: Status, error: BaseException | None, message: str | None = None
) -> None:
    span.set_attribute(ATTR_STATUS, status.value)
    if status in _ENDED_BADLY:
        reported = reported_error(status, error)
        if reported is not None:
            span.record_exception(reported)
        description = _describe(error) if error is not None else message
        span.set_status(SpanStatus(StatusCode.ERROR, description or status.value))


class TracingHook:
    """Starts, makes current and ends each in-run execution's span (on the job's path).

    With an SDK tracer the span is deferred (:attr:`deferred`): a stand-in is current during
    the run, and the real span is built by :class:`TracingSink` after the run ended.
    """

    name = "tracing"

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        capacity: int = 100_000,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        """``capacity`` and ``on_drop``: how many ended runs may wait for their deferred span,
        and who is told of each one dropped past that (see :class:`DeferredSpans`)."""
        self.tracer = _tracer(tracer_provider)
        self.capacity = capacity
        self.event_runs: dict[str, tuple[int, int]] = {}
        """Trace id (hex) -> ids given to runs known from events, until their span is built."""
        self.deferred = DeferredSpans.for_tracer(
            self.tracer,
            attributes_of=_attributes,
            end_status=_end_status,
            status_attribute=ATTR_STATUS,
            capacity=capacity,
            on_drop=on_drop,
        )

    def enter(self, run: Run) -> object:
        links = None
        if run.origin is Origin.MANUAL:
            requested = run.extras.get(CARRIER)  # the context run_now() was called in
            links = _link_to(requested) if isinstance(requested, Context) else None
        elif run.origin is Origin.DIRECT:
            links = _link_to(otel_context.get_current())
        span = None
        if self.deferred is not None:
            span = self.deferred.start(run.job_name, run, links)
        if span is None:
            span = self.tracer.start_span(
                run.job_name,
                context=_EMPTY,
                kind=SpanKind.INTERNAL,
                attributes=_attributes(run),
                links=links,
            )
        span_context = span.get_span_context()
        if span_context.is_valid:
            run.set_span_ids(span_context.trace_id, span_context.span_id)
        current = _in_empty_context(span)
        return span, current, otel_context.attach(current)

    def name_event_run(self, run: Run) -> None:
        """A run known only from scheduler events (an undecorated job): its span is built after
        it ends (:class:`TracingSink`), with ids made now, so that its record — its row, its
        log lines — carries them like any run's. Only with an SDK tracer (ids to preset)."""
        deferred = self.deferred
        if deferred is None:
            return
        trace_id, span_id = deferred.new_ids()
        run.set_span_ids(trace_id, span_id)
        named = self.event_runs
        named["%032x" % trace_id] = (trace_id, span_id)  # noqa: UP031 (faster)
        while len(named) > self.capacity:  # runs whose end never came: forget the oldest
            named.pop(next(iter(named)))

    def exit(self, run: Run, token: object, status: Status, error: BaseException | None) -> None:
        if token is None:
            return
        span: trace.Span = token[0]  # type: ignore[index]
        try:
            if type(span) is StandInSpan:
                assert self.deferred is not None
                self.deferred.finish(span, status, error)
            else:
                try:
                    _end_status(span, status, error)
                finally:
                    span.end()
        finally:
            self.release(run, token)

    def release(self, run: Run, token: object) -> None:
        """Make the run's span no longer current, where it still is. Only there: the hub may
        close a run from another thread (shutdown), where detaching would fail (and the
        job's context is not ours); the job's thread then calls this when the job returns."""
        if token is None:
            return
        current: Context
        attached: Token[Context]
        _, current, attached = token  # type: ignore[misc]
        if otel_context.get_current() is current:
            otel_context.detach(attached)


def _ns(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1e9)


class TracingSink(BaseSink):
    """Spans, after the fact, for runs known only from scheduler events; bounded flushes.

    Runs recorded from inside (``@tracked_job``) already carry their span's ids and are
    left alone. Every span — those deferred runs', those made after the fact — is built on
    a :class:`SpanBuilder`'s thread, since a processor may export it right there: this
    sink's thread only asks for them. ``flush``/``close`` wait for them, then flush the
    provider (default: the global one) on a helper thread, and give up after ``timeout``,
    so a hanging exporter never hangs the tracker. The provider is not shut down: it
    belongs to whoever configured it.
    """

    name = "tracing"
    handles_jobs = False  # job changes have no span

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        deferred: DeferredSpans | None = None,
        *,
        capacity: int = 100_000,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        """``capacity`` and ``on_drop``: how many runs may wait for their span after the fact,
        and who is told of each one dropped past that."""
        self.provider = tracer_provider
        self.tracer = _tracer(tracer_provider)
        self.deferred = deferred
        self.builder = deferred.builder if deferred is not None else SpanBuilder()
        self.room = (
            deferred.room
            if deferred is not None
            else SpanRoom(getattr(self.tracer, "span_processor", None))
        )
        self.capacity = capacity
        self.on_drop = on_drop
        self._after: deque[Execution] = deque()
        self.event_runs: dict[str, tuple[int, int]] = {}
        """The tracing hook's ids of runs known from events (see
        :meth:`TracingHook.name_event_run`): their records' spans are built with them."""
        self._starved = False  # the last round left spans, for want of room (see flush)
        self._unflushed_since: float | None = None
        """When the last flush began, if it did not succeed (close's warning counts from
        there: the hub flushes a sink just before it closes it)."""

    @property
    def pending(self) -> int:
        """Runs that ended whose span is not built yet."""
        return len(self._after) + (self.deferred.pending if self.deferred is not None else 0)

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        named = self.event_runs
        for event in events:
            if (
                type(event) is Execution
                and (event.trace_id is None or event.trace_id in named)
                and event.status not in _NO_SPAN
                and event.started_at is not None
            ):
                if len(self._after) < self.capacity:
                    self._after.append(event)
                elif self.on_drop is not None:
                    self.on_drop(self.name, 1)
        self.tick()

    def tick(self) -> None:
        self._build_soon()
        failure = self.builder.take_failure()
        if failure is not None:
            raise failure  # counted as this sink's error

    def _build_soon(self) -> None:
        """Ask the builder for the spans of every run that ended so far; never waits."""
        if self.deferred is not None:
            self.deferred.realize_soon()
        if self._after:
            self.builder.request(self._build_after_the_fact)

    def _build_after_the_fact(self) -> None:
        """On the builder's thread: the spans of runs known only from their records."""
        after = self._after
        failure: Exception | None = None
        until = time.monotonic() + ROOM_WAIT_S
        while after and self.room.wait(until):  # (see DeferredSpans.realize_pending)
            try:
                self._span_after_the_fact(after.popleft())
            except Exception as exc:
                failure = failure or exc
        self._starved = bool(after)
        if failure is not None:
            raise failure

    def _span_after_the_fact(self, record: Execution) -> None:
        ids = self.event_runs.pop(record.trace_id, None) if record.trace_id else None
        deferred = self.deferred
        tracer: Tracer = self.tracer
        ids_given: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if ids is not None and deferred is not None:  # the ids its record carries
            tracer, ids_given = deferred.tracer, deferred.preset_ids(ids)
        with ids_given:
            span = tracer.start_span(
                record.job_name,
                context=_EMPTY,
                kind=SpanKind.INTERNAL,
                attributes=_attributes(record),
                start_time=_ns(record.started_at),
            )
        message = None
        if record.error_type:
            message = f"{record.error_type}: {record.error_message or ''}"
            span.add_event(
                "exception",
                {
                    "exception.type": record.error_type,
                    "exception.message": record.error_message or "",
                    "exception.stacktrace": record.traceback or "",
                },
                timestamp=_ns(record.finished_at),
            )
        _end_status(span, record.status, None, message)
        span.end(end_time=_ns(record.finished_at))

    def flush(self, timeout: float) -> bool:
        """Build every span of runs that ended so far, then flush the provider; ``False``
        if ``timeout`` ran out first (the builder or the exporter is stuck)."""
        started = self._unflushed_since = time.monotonic()
        deadline = started + timeout
        while True:
            self._build_soon()
            flushed = self.builder.wait(deadline - time.monotonic()) and flush_provider(
                self.provider, max(0.0, deadline - time.monotonic())
            )
            # Spans left waiting for room in a full batch processor: once flushed, it has.
            if not flushed or not self._starved_now() or time.monotonic() >= deadline:
                break
        flushed = flushed and not self._starved_now()
        if flushed:
            self._unflushed_since = None
        return flushed

    def _starved_now(self) -> bool:
        return self._starved or (self.deferred is not None and self.deferred.starved)

    def close(self, timeout: float) -> None:
        """Flush within ``timeout``; runs ending after this ask the builder themselves."""
        if self.deferred is not None:
            self.deferred.closed = True
        started = time.monotonic()
        since = self._unflushed_since if self._unflushed_since is not None else started
        if not self.flush(timeout):
            unbuilt = f" ({self.pending} not built yet)" if self.pending else ""
            logger.warning(
                "spans not flushed within %.1f s%s; the exporter may be down",
                time.monotonic() - since,
                unbuilt,
            )


_flushing: dict[int, threading.Thread] = {}


def flush_provider(provider: TracerProvider | None = None, timeout: float = 5.0) -> bool:
    """Flush ``provider`` (default: the global one), giving up after ``timeout`` seconds.

    The SDK's ``force_flush`` waits for the exporter however long it takes; here it runs
    on a daemon thread, so the caller never waits longer than ``timeout``. A flush still
    stuck from an earlier call is not started twice. ``True`` if everything went out.
    """
    provider = provider or trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is None:
        return True
    key = id(provider)
    thread = _flushing.get(key)
    if thread is None or not thread.is_alive():
        outcome: list[bool] = []

        def run() -> None:
            try:
                outcome.append(bool(force_flush(max(1, int(timeout * 1000)))))
            except Exception:
                logger.exception("flushing spans failed")
                outcome.append(False)

        thread = threading.Thread(target=run, name="tracker-otel-flush", daemon=True)
        thread.outcome = outcome  # type: ignore[attr-defined]
        _flushing[key] = thread
        thread.start()
    thread.join(max(0.0, timeout))
    if thread.is_alive():
        return False
    _flushing.pop(key, None)
    done: list[bool] = thread.outcome  # type: ignore[attr-defined]
    return bool(done and done[0])


def enable_tracing(hub: Hub, tracer_provider: TracerProvider | None = None) -> TracingHook:
    """Give every run of ``hub`` a span (the Tracker's ``tracing=True`` does this)."""
    hook = TracingHook(tracer_provider, capacity=hub.queue_capacity, on_drop=hub.count_drop)
    hub.add_hook(hook)
    sink = TracingSink(
        tracer_provider, hook.deferred, capacity=hub.queue_capacity, on_drop=hub.count_drop
    )
    sink.event_runs = hook.event_runs  # the ids the hook gives runs known from events
    hub.add_sink(sink)
    _context.add_carrier(CARRIER, otel_context.get_current)
    return hook


def configure_otlp_from_env(*, service_name: str | None = None, set_global: bool = True) -> Any:
    """An SDK ``TracerProvider`` exporting as the standard ``OTEL_*`` variables say.

    ``OTEL_TRACES_EXPORTER`` picks the exporter: ``otlp`` (the default: OTLP over HTTP/protobuf
    to ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``,
    default ``http://localhost:4318``, with ``..._HEADERS``, ``..._TIMEOUT``,
    ``..._COMPRESSION``), ``console`` or ``none``. The resource comes from
    ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (``service_name`` is the fallback
    name); batching from ``OTEL_BSP_*``. With ``OTEL_SDK_DISABLED=true`` nothing is exported.
    Installed as the global provider unless ``set_global=False``; returns it.
    """
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes = {}
    if service_name and not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = service_name
    provider = SdkTracerProvider(resource=Resource.create(attributes))
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if not disabled and choice not in ("none", ""):
        if choice == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            if choice != "otlp":
                logger.warning("OTEL_TRACES_EXPORTER=%s is not supported here; using otlp", choice)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
