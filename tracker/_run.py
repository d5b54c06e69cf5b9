"""A run in progress: the mutable state the hub keeps until the run ends."""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ._ids import new_run_id
from ._record import _EMPTY_TAGS, Execution, Origin, Status

if TYPE_CHECKING:
    from ._hub import Hub, RunHook

_new_execution = Execution._make  # positional construction: the fastest path to a record
_perf_counter = time.perf_counter
_time = time.time
_fromtimestamp = datetime.fromtimestamp


class Run:
    """Per-run state held by the hub while a run is in progress.

    Hooks (tracing, log context, Sentry scope) may set ``trace_id``/``span_id`` and put
    what they need in ``extras``. ``forced_status`` lets a watchdog close the run as
    ``timed_out`` while keeping its real error, if any.
    """

    # Not slotted: what most runs never change is read from these class attributes, so making
    # a run sets ten attributes instead of twenty-three (480-570 ns a run slotted, 384 ns now,
    # on the job's own path).
    _run_id: str | None = None
    _started_at: datetime | None = None
    _trace_id: str | None = None
    _span_id: str | None = None
    _span_ints: tuple[int, int] | None = None
    _ids = False
    """Whether a hook gave it span ids (one attribute for the hub's thread to read, not three)."""
    _extras: dict[str, object] | None = None
    _entered: list[tuple[RunHook, object]] | None = None
    """The hooks entered for it, with their tokens, until they are exited (``Hub``)."""
    _release: list[tuple[RunHook, object]] | None = None
    """The hooks to release on the job's thread after the run was closed from another one."""
    tags: Mapping[str, str] = _EMPTY_TAGS
    max_runtime: float | None = None
    key: Hashable | None = None
    forced_status: Status | None = None
    announced = False
    """Whether its ``running`` record was published (runs that end quickly never are)."""
    hub: Hub | None = None
    """The hub that began it, for the in-run integration's end of the run."""
    outer: Run | None = None
    """The run that was current where this one began (restored as current at its end)."""
    # How it ended, set when the job's thread queues it for its record (attributes, not a
    # tuple: every object that outlives the run is one more for the garbage collector).
    error: BaseException | None = None
    duration = 0.0
    final: Status | None = None
    ended = False
    """Set when the run ends (or is closed). Contexts copied while it ran — tasks it created,
    callbacks it scheduled, APScheduler's asyncio timer chain woken by ``add_job`` — still
    hold it as current after that: readers of the current run check this."""

    def __init__(
        self,
        run_id: str | None,
        job_id: str,
        job_name: str,
        scheduled_at: datetime | None,
        instance: str,
        origin: Origin = Origin.SCHEDULED,
        tags: Mapping[str, str] | None = None,
        max_runtime: float | None = None,
        key: Hashable | None = None,
        started_at: datetime | None = None,
    ) -> None:
        # Only clocks are read here, on the job's own path; the id and the datetimes are
        # made when first asked for (mostly on the hub's thread, after the run ended).
        # (_decorator._begin makes the job's own runs without calling this, setting the same
        # attributes itself: keep the two alike.)
        self._t0 = _perf_counter()
        if started_at is None:
            self._wall0 = _time()
        else:
            self._wall0 = started_at.timestamp()
            self._started_at = started_at
        if run_id is not None:
            self._run_id = run_id
        self.job_id = job_id
        self.job_name = job_name
        self._scheduled_at = scheduled_at
        self.instance = instance
        self.origin = origin
        if tags:
            self.tags = tags
        if max_runtime is not None:
            self.max_runtime = max_runtime
        if key is not None:
            self.key = key

    @property
    def extras(self) -> dict[str, object]:
        """What hooks keep with the run (made on first use: most runs need none)."""
        extras = self._extras
        if extras is None:
            extras = self._extras = {}
        return extras

    @property
    def run_id(self) -> str:
        """The run's UUIDv7, made on first use from its start time (so ids sort by start)."""
        run_id = self._run_id
        if run_id is None:
            # The job's thread and the hub's may both ask first: the first id stored wins
            # (``dict.setdefault`` is atomic), and both get it.
            made = new_run_id(int(self._wall0 * 1000))
            run_id = self.__dict__.setdefault("_run_id", made)
            if run_id is None:  # (set to None by hand)
                run_id = self._run_id = made
        return run_id

    def set_span_ids(self, trace_id: int, span_id: int) -> None:
        """The run's span ids as the tracer made them: written as hex when first read (mostly
        on the hub's thread, after the run ended; formatting a 128-bit id costs the job's
        path a microsecond)."""
        self._span_ints = (trace_id, span_id)
        self._trace_id = self._span_id = None
        self._ids = True

    @property
    def trace_id(self) -> str | None:
        """The run's trace id (32 hex digits), if a tracing hook gave it one."""
        trace_id = self._trace_id
        if trace_id is None and self._span_ints is not None:
            trace_id = self._trace_id = "%032x" % self._span_ints[0]  # noqa: UP031 (faster)
        return trace_id

    @trace_id.setter
    def trace_id(self, value: str | None) -> None:
        self._written_ids()
        self._trace_id = value
        self._ids = True

    @property
    def span_id(self) -> str | None:
        """The run's span id (16 hex digits), if a tracing hook gave it one."""
        span_id = self._span_id
        if span_id is None and self._span_ints is not None:
            span_id = self._span_id = "%016x" % self._span_ints[1]  # noqa: UP031
        return span_id

    @span_id.setter
    def span_id(self, value: str | None) -> None:
        self._written_ids()
        self._span_id = value
        self._ids = True

    def _written_ids(self) -> None:
        """Write ids given as numbers as text now (one of them is being replaced)."""
        ints = self._span_ints
        if ints is not None:
            self._trace_id = self.trace_id
            self._span_id = self.span_id
            self._span_ints = None

    @property
    def started_at(self) -> datetime:
        """The true start (wall clock, UTC)."""
        started = self._started_at
        if started is None:
            started = self._started_at = _fromtimestamp(self._wall0, UTC)
        return started

    @property
    def scheduled_at(self) -> datetime:
        """The fire time that was due (UTC); for a direct call, the start."""
        scheduled = self._scheduled_at
        if scheduled is None:
            return self.started_at
        if scheduled.tzinfo is not UTC:  # as the scheduler gave it: in its own time zone
            scheduled = self._scheduled_at = scheduled.astimezone(UTC)
        return scheduled

    @property
    def lateness_s(self) -> float:
        """Seconds between the fire time that was due and the true start."""
        if self._scheduled_at is None:
            return 0.0
        return (self.started_at - self.scheduled_at).total_seconds()

    @property
    def elapsed_s(self) -> float:
        """Seconds since the run started (monotonic clock)."""
        return _perf_counter() - self._t0

    def snapshot(self) -> Execution:
        """The run as a ``running`` record."""
        return _new_execution(
            (
                self.run_id,
                self.job_id,
                self.job_name,
                Status.RUNNING,
                self.scheduled_at,
                self.started_at,
                None,
                None,
                self.lateness_s,
                None,
                None,
                None,
                self.instance,
                self.origin,
                0,
                self.trace_id,
                self.span_id,
                self.tags,
            )
        )

    def __repr__(self) -> str:
        return f"<Run {self.run_id} job={self.job_id!r}>"
