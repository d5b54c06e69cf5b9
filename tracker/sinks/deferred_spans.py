"""Run spans built off the job's path: a stand-in while the run is in progress, the SDK's
span after it ended, on a thread of its own.

Creating and ending an OpenTelemetry SDK span costs about 26 µs, and on the job's own
thread it costs the scheduler more than that (``bench/overhead.py``: 111 µs a run, more
than everything else the tracker does). While the run is in progress the job's code
needs only three things from the run's span: its ids (spans the job opens nest under
it), its sampling decision (they inherit it), and somewhere to put what it records on
the current span. So on the job's path:

* the ids and the sampling decision come from the SDK's own id generator and sampler,
  called as ``Tracer.start_span`` would call them for a root span;
* a :class:`StandInSpan` with that context is made current. What the job records on it
  (attributes, events, exceptions, status, a new name) is kept, with the time it happened;
* when the run ends, the stand-in is queued with its end time and outcome.

A :class:`SpanBuilder`'s thread then builds the real span (when the tracing sink's thread
asks it to), with the same ids, name, start and end times:

* in the common case (nothing recorded by the job, the run succeeded, no links, the
  provider's processors are the SDK's batch or simple ones, attributes within its limits):
  a ``ReadableSpan`` handed to the processors' ``on_end``, which is what the SDK's own
  ``Span.end`` hands them. That costs about 5 µs;
* otherwise through ``Tracer.start_span``, with the sampler and id generator answering
  what was decided on the job's path, the job's recorded calls replayed, and the usual
  status and exception handling. Processors' ``on_start``, span limits and the SDK's
  own checks all apply.

Building a span hands it to the processors, and a processor may export it right there
(``SimpleSpanProcessor``), waiting as long as the exporter does: hence the builder's own
daemon thread. The tracing sink's thread, ``close()`` and jobs ending after it only ever
ask it for work, and wait for it (if at all) with a timeout.

Only an SDK tracer can be deferred; with any other provider the span is made on the
job's path as before (:meth:`DeferredSpans.for_tracer` returns ``None``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    DEFAULT_TRACE_STATE,
    Link,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.status import Status as SpanStatus
from opentelemetry.trace.status import StatusCode
from opentelemetry.util import types

from .._record import Status
from .span_room import SpanRoom

logger = logging.getLogger("tracker.tracing")

_EMPTY = Context()
_UNSET = SpanStatus(StatusCode.UNSET)
_time_ns = time.time_ns
ROOM_WAIT_S = 1.0
"""Seconds one round of building waits, in all, for room in full batch processors."""
_PLAIN_PROCESSORS = (BatchSpanProcessor, SimpleSpanProcessor)
_RANDOM_TRACE_ID = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))

EndStatus = Callable[[trace.Span, Status, "BaseException | None"], None]
"""Sets a run's outcome on its span (status attribute, error status, exception event)."""
AttributesOf = Callable[[Any], dict[str, Any]]
"""The span attributes of a run (from what is known when it starts)."""


class StandInSpan(trace.Span):
    """The run's span while the run is in progress: its context, and what the job recorded.

    It is current during the run, so spans the job's code opens are its children. Calls the
    job makes on it are kept (with their time) and replayed on the real span when it is
    built; calls made after the run ended are ignored, as an ended SDK span ignores them,
    and its context is then the invalid one (see :meth:`get_span_context`).
    """

    __slots__ = (
        "attributes",
        "context",
        "end_ns",
        "ended",
        "error",
        "links",
        "name",
        "ops",
        "run",
        "sampling",
        "start_ns",
        "status",
        "user_end_ns",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        run: object,
        attributes: types.Attributes,
        links: Sequence[Link],
        sampling: SamplingResult,
        start_ns: int,
    ) -> None:
        self.name = name
        self.context = context
        self.run = run
        self.attributes = attributes
        """Given to the sampler on the job's path; ``None`` when the sampler does not look at
        them (they are then made with the real span)."""
        self.links = links
        self.sampling = sampling
        self.start_ns = start_ns
        self.ended = False
        self.user_end_ns: int | None = None
        self.ops: list[tuple[str, tuple[Any, ...]]] | None = None
        # end_ns, status and error are set when the run ends (finish).
        self.end_ns = 0
        self.status = Status.RUNNING
        self.error: BaseException | None = None

    def _keep(self, name: str, args: tuple[Any, ...]) -> None:
        if self.ended or self.user_end_ns is not None:
            return
        if self.ops is None:
            self.ops = []
        self.ops.append((name, args))

    # -- opentelemetry.trace.Span -------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        # Once the run ended, no longer a parent: contexts copied while it ran (a task it
        # started, APScheduler's asyncio timer chain woken by an add_job() in the job) would
        # otherwise nest other jobs' spans under this run's, for good. Spans started there
        # begin traces of their own.
        return trace.INVALID_SPAN_CONTEXT if self.ended else self.context

    def is_recording(self) -> bool:
        return not self.ended and self.user_end_ns is None

    def end(self, end_time: int | None = None) -> None:
        """The job ended the run's span itself: it ends then, and the run's outcome is not
        set on it (as with an SDK span, which ignores calls once ended)."""
        if not self.ended and self.user_end_ns is None:
            self.user_end_ns = end_time if end_time is not None else _time_ns()

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self._keep("set_attributes", (dict(attributes),))

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self._keep("set_attribute", (key, value))

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        self._keep("add_event", (name, attributes, timestamp or _time_ns()))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        self._keep("add_link", (context, attributes))

    def update_name(self, name: str) -> None:
        self._keep("update_name", (name,))

    def set_status(self, status: SpanStatus | StatusCode, description: str | None = None) -> None:
        self._keep("set_status", (status, description))

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._keep("record_exception", (exception, attributes, timestamp or _time_ns(), escaped))


class _Preset(threading.local):
    """What the sampler and id generator answer while a stand-in is realized on this thread."""

    ids: tuple[int, int] | None = None
    sampling: SamplingResult | None = None


class _PresetIds(IdGenerator):
    def __init__(self, inner: IdGenerator, preset: _Preset) -> None:
        self.inner = inner
        self.preset = preset

    def generate_trace_id(self) -> int:
        ids = self.preset.ids
        return ids[0] if ids is not None else self.inner.generate_trace_id()

    def generate_span_id(self) -> int:
        ids = self.preset.ids
        return ids[1] if ids is not None else self.inner.generate_span_id()

    def is_trace_id_random(self) -> bool:
        check = getattr(self.inner, "is_trace_id_random", None)
        return bool(check()) if check is not None else False


class _PresetSampler(Sampler):
    def __init__(self, inner: Sampler, preset: _Preset) -> None:
        self.inner = inner
        self.preset = preset

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        sampling = self.preset.sampling
        if sampling is not None:
            return sampling
        return self.inner.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return self.inner.get_description()


class SpanBuilder:
    """A daemon thread that runs the work handing spans to the provider's processors.

    A processor may export a span as it ends (``SimpleSpanProcessor``), and an exporter may
    wait for a collector that never answers: only this thread ever waits for that. Callers
    ask for a task (:meth:`request`, never blocks) and may wait for what they asked, with a
    timeout (:meth:`wait`). Each task drains a queue of its owner; asking again for one not
    started yet runs it once. The thread ends when idle, and starts again on demand.
    """

    def __init__(self, name: str = "tracker-otel-spans", linger: float = 1.0) -> None:
        self.name = name
        self.linger = linger
        """Seconds the thread waits for more work before it ends."""
        self._cond = threading.Condition()
        self._tasks: list[Callable[[], None]] = []
        self._asked = 0
        self._done = 0
        self._running = False
        self._failure: Exception | None = None

    def request(self, task: Callable[[], None]) -> None:
        """Have the thread run ``task`` soon; never waits for it."""
        with self._cond:
            self._asked += 1
            if task not in self._tasks:
                self._tasks.append(task)
            if self._running:
                self._cond.notify_all()
                return
            self._running = True
        try:
            threading.Thread(target=self._run, name=self.name, daemon=True).start()
        except BaseException:
            with self._cond:
                self._running = False
            raise

    def wait(self, timeout: float) -> bool:
        """Wait until every task asked for so far has run; ``False`` if ``timeout`` ran out."""
        with self._cond:
            asked = self._asked
            return self._cond.wait_for(lambda: self._done >= asked, max(0.0, timeout))

    def take_failure(self) -> Exception | None:
        """The first exception a task raised since the last call (to be counted), if any."""
        with self._cond:
            failure, self._failure = self._failure, None
        return failure

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._tasks:
                    self._cond.wait(self.linger)
                if not self._tasks:
                    self._running = False
                    return
                tasks, self._tasks = self._tasks, []
                asked = self._asked
            failure: Exception | None = None
            for task in tasks:
                try:
                    task()
                except Exception as exc:
                    failure = failure or exc
            with self._cond:
                self._failure = self._failure or failure
                self._done = asked
                self._cond.notify_all()


class DeferredSpans:
    """Stand-ins started on the job's path, realized as SDK spans by a :class:`SpanBuilder`."""

    def __init__(
        self,
        tracer: SdkTracer,
        *,
        attributes_of: AttributesOf,
        end_status: EndStatus,
        status_attribute: str,
        capacity: int = 100_000,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.tracer = tracer
        self.attributes_of = attributes_of
        self.end_status = end_status
        self.status_attribute = status_attribute
        self.capacity = capacity
        """Most ended runs waiting for their span; past it, a run's span is dropped."""
        self.on_drop = on_drop
        """Told ``("tracing", 1)`` for each span dropped (else they are dropped silently)."""
        self.closed = False
        """Set when the tracing sink closes: a run ending later asks the builder itself."""
        self.builder = SpanBuilder()
        self.room = SpanRoom(tracer.span_processor)
        """Room in the provider's batch processors, waited for before each span is built."""
        self.starved = False
        """Whether the last round of building stopped with spans left, for want of room."""
        self._done: deque[StandInSpan] = deque()
        preset = _Preset()
        ids = tracer.id_generator
        sampler = tracer.sampler
        if isinstance(ids, _PresetIds) and isinstance(sampler, _PresetSampler):
            preset = ids.preset  # another tracker on the same provider installed them
        else:
            tracer.id_generator = ids = _PresetIds(ids, preset)
            tracer.sampler = sampler = _PresetSampler(sampler, preset)
        self._preset = preset
        self._ids = ids.inner
        self._sampler = sampler.inner
        random_ids = _RANDOM_TRACE_ID if ids.is_trace_id_random() else 0
        self._flags = (TraceFlags(random_ids), TraceFlags(1 | random_ids))
        """Trace flags of a span not sampled, and of a sampled one."""
        self._enabled: Callable[[], bool] | None = getattr(tracer, "_is_enabled", None)
        self._scope = getattr(tracer, "_instrumentation_scope", None)
        limits = getattr(tracer, "_span_limits", None)
        self._max_attributes: int | None = getattr(limits, "max_span_attributes", 0)
        self._limited_length = getattr(limits, "max_span_attribute_length", 0) is not None
        """Whether attribute values may be cut (then only the SDK's own span applies it)."""
        root = _root_sampler(self._sampler)
        self._blind = isinstance(root, StaticSampler | TraceIdRatioBased)
        """Whether the sampler decides a root span without looking at its attributes."""
        self._constant = (
            root.should_sample(_EMPTY, 0, "", SpanKind.INTERNAL)
            if type(root) is StaticSampler
            else None
        )
        """The decision of a sampler that always decides the same for a root span."""

    @classmethod
    def for_tracer(
        cls,
        tracer: trace.Tracer,
        *,
        attributes_of: AttributesOf,
        end_status: EndStatus,
        status_attribute: str,
        capacity: int = 100_000,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> DeferredSpans | None:
        """Deferred spans for ``tracer``, or ``None`` if it is not the SDK's (nothing to defer)."""
        if not isinstance(tracer, SdkTracer):
            return None
        try:
            return cls(
                tracer,
                attributes_of=attributes_of,
                end_status=end_status,
                status_attribute=status_attribute,
                capacity=capacity,
                on_drop=on_drop,
            )
        except Exception:  # an SDK that changed shape: spans are made on the job's path
            logger.warning("OpenTelemetry SDK spans cannot be deferred here", exc_info=True)
            return None

    @property
    def pending(self) -> int:
        """Ended runs whose span is not built yet."""
        return len(self._done)

    def new_ids(self) -> tuple[int, int]:
        """A trace id and a span id from the SDK's id generator (as a root span gets)."""
        return self._ids.generate_trace_id(), self._ids.generate_span_id()

    @contextlib.contextmanager
    def preset_ids(self, ids: tuple[int, int]) -> Iterator[None]:
        """Within the block, spans this thread starts on :attr:`tracer` get ``ids``."""
        preset = self._preset
        previous, preset.ids = preset.ids, ids
        try:
            yield
        finally:
            preset.ids = previous

    # -- on the job's path ---------------------------------------------------------

    def start(self, name: str, run: object, links: Sequence[Link] | None) -> trace.Span | None:
        """The span of ``run`` while it is in progress: a stand-in, or a non-recording span
        when the sampler drops it. ``None`` when the tracer is disabled (the caller then asks
        the tracer itself)."""
        enabled = self._enabled
        if enabled is not None and not enabled():
            return None
        trace_id = self._ids.generate_trace_id()
        links = links or ()
        attributes = None
        sampling = self._constant
        if sampling is None:
            if not self._blind:
                attributes = self.attributes_of(run)
            sampling = self._sampler.should_sample(
                _EMPTY, trace_id, name, SpanKind.INTERNAL, attributes, links
            )
        decision = sampling.decision
        context = _span_context(
            trace_id,
            self._ids.generate_span_id(),
            self._flags[decision is Decision.RECORD_AND_SAMPLE],
            sampling.trace_state,
        )
        if decision is Decision.DROP:
            return trace.NonRecordingSpan(context)
        return StandInSpan(name, context, run, attributes, links, sampling, _time_ns())

    def finish(self, span: StandInSpan, status: Status, error: BaseException | None) -> None:
        """The run ended: queue its span to be built (by the builder). Never waits: once the
        sink closed, the run asks the builder itself, and what does not fit is dropped."""
        span.end_ns = _time_ns()
        span.status = status
        span.error = error
        span.ended = True
        if len(self._done) >= self.capacity:
            if self.on_drop is not None:
                self.on_drop("tracing", 1)
            return
        self._done.append(span)
        if self.closed:  # no sink's thread asks for it any more
            self.realize_soon()

    # -- off the job's path ----------------------------------------------------------

    def realize_soon(self) -> None:
        """Have the builder's thread build the spans of the runs that ended; never waits."""
        if self._done:
            self.builder.request(self.realize_pending)

    def realize_pending(self) -> None:
        """Build and end the real span of every run that ended so far. One span that fails
        does not stop the others; the first error is raised after them (to be counted).

        A span is built only while the provider's batch processors have room for it (waiting
        up to :data:`ROOM_WAIT_S` in all for their workers): the rest wait for the next call,
        within this object's ``capacity``, instead of being dropped by a full processor."""
        done = self._done
        if not done:
            return
        plain = self._plain()
        failure: Exception | None = None
        until = time.monotonic() + ROOM_WAIT_S
        while done and self.room.wait(until):
            try:
                span = done.popleft()
            except IndexError:
                break
            try:
                self.realize(span, plain)
            except Exception as exc:
                failure = failure or exc
        self.starved = bool(done)  # (the loop ends with spans left only for want of room)
        if failure is not None:
            raise failure

    def realize(self, stand_in: StandInSpan, plain: bool) -> None:
        """Build the real span of one ended run."""
        if (
            plain
            and stand_in.status is Status.SUCCEEDED
            and stand_in.error is None
            and stand_in.ops is None
            and stand_in.user_end_ns is None
            and not stand_in.links
        ):
            attributes = self._attributes(stand_in)
            attributes[self.status_attribute] = stand_in.status._value_
            limit = self._max_attributes
            if limit is None or len(attributes) <= limit:
                self._readable(stand_in, attributes)
                return
        self._through_tracer(stand_in)

    def _readable(self, stand_in: StandInSpan, attributes: dict[str, Any]) -> None:
        tracer = self.tracer
        tracer.span_processor.on_end(
            ReadableSpan(
                name=stand_in.name,
                context=stand_in.context,
                parent=None,
                resource=tracer.resource,
                attributes=attributes,
                kind=SpanKind.INTERNAL,
                instrumentation_info=tracer.instrumentation_info,
                status=_UNSET,
                start_time=stand_in.start_ns,
                end_time=stand_in.end_ns,
                instrumentation_scope=self._scope,
            )
        )

    def _through_tracer(self, stand_in: StandInSpan) -> None:
        preset = self._preset
        context = stand_in.context
        attributes = self._attributes(stand_in)
        sampling = stand_in.sampling
        preset.ids = (context.trace_id, context.span_id)
        preset.sampling = SamplingResult(sampling.decision, attributes, sampling.trace_state)
        try:
            span = self.tracer.start_span(
                stand_in.name,
                context=_EMPTY,
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                links=stand_in.links,
                start_time=stand_in.start_ns,
            )
        finally:
            preset.ids = preset.sampling = None
        for name, args in stand_in.ops or ():
            getattr(span, name)(*args)
        if stand_in.user_end_ns is not None:
            span.end(end_time=stand_in.user_end_ns)
            return
        try:
            self.end_status(span, stand_in.status, stand_in.error)
        finally:
            span.end(end_time=stand_in.end_ns)

    def _attributes(self, stand_in: StandInSpan) -> dict[str, Any]:
        """The span's attributes: the run's, with what the sampler added."""
        if stand_in.attributes is None:  # the sampler did not look at them: made now
            attributes = self.attributes_of(stand_in.run)
            attributes.update(stand_in.sampling.attributes or {})
            return attributes
        return dict(stand_in.sampling.attributes or stand_in.attributes)

    def _plain(self) -> bool:
        """Whether a ``ReadableSpan`` handed to ``on_end`` is all the provider would do with
        a span: its processors (which may be added at any time) do nothing on start, and
        attribute values are not cut to a length (the count is checked per span)."""
        if self._limited_length:
            return False
        processors = getattr(self.tracer.span_processor, "_span_processors", None)
        if processors is None:
            return False
        return all(_does_nothing_on_start(p) for p in processors)


_MAX_TRACE_ID = 2**128 - 1
_MAX_SPAN_ID = 2**64 - 1
_tuple_new = tuple.__new__


def _span_context(
    trace_id: int, span_id: int, flags: TraceFlags, state: TraceState | None
) -> SpanContext:
    """``SpanContext(trace_id, span_id, is_remote=False, ...)`` in a third of the time (the
    API's constructor checks its arguments' types; these come from the SDK)."""
    if not _FAST_CONTEXT:
        return SpanContext(trace_id, span_id, False, flags, state)
    valid = 0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID
    state = DEFAULT_TRACE_STATE if state is None else state
    return _tuple_new(SpanContext, (trace_id, span_id, False, flags, state, valid))


def _fast_context_works() -> bool:
    """Whether ``SpanContext`` is still the 6-tuple the fast path builds (else: the constructor)."""
    try:
        fast = _tuple_new(SpanContext, (7, 9, False, TraceFlags(1), DEFAULT_TRACE_STATE, True))
        real = SpanContext(7, 9, False, TraceFlags(1), None)
        return bool(fast == real and fast.is_valid and fast.trace_state is real.trace_state)
    except Exception:
        return False


_FAST_CONTEXT = _fast_context_works()


def _root_sampler(sampler: Sampler) -> Sampler:
    """The sampler that decides a root span (``ParentBased`` asks its ``root``)."""
    while isinstance(sampler, ParentBased):
        sampler = sampler._root
    return sampler


def _does_nothing_on_start(processor: SpanProcessor) -> bool:
    kind = type(processor)
    if kind in _PLAIN_PROCESSORS:
        return True
    return kind.on_start is SpanProcessor.on_start and getattr(kind, "_on_ending", None) is getattr(
        SpanProcessor, "_on_ending", None
    )
