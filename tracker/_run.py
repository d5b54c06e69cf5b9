"""A run in progress: the mutable state the hub keeps until the run ends."""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime

from ._record import _EMPTY_TAGS, Execution, Origin, Status

_new_execution = Execution._make  # positional construction: the fastest path to a record


class Run:
    """Per-run state held by the hub while a run is in progress.

    Hooks (tracing, log context, Sentry scope) may set ``trace_id``/``span_id`` and put
    what they need in ``extras``. ``forced_status`` lets a watchdog close the run as
    ``timed_out`` while keeping its real error, if any.
    """

    __slots__ = (
        "_t0",
        "announced",
        "extras",
        "forced_status",
        "instance",
        "job_id",
        "job_name",
        "key",
        "max_runtime",
        "origin",
        "run_id",
        "scheduled_at",
        "span_id",
        "started_at",
        "tags",
        "token",
        "trace_id",
    )

    def __init__(
        self,
        run_id: str,
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
        self._t0 = time.perf_counter()
        self.started_at = started_at = started_at or datetime.now(UTC)
        self.run_id = run_id
        self.job_id = job_id
        self.job_name = job_name
        self.scheduled_at = scheduled_at or started_at
        self.instance = instance
        self.origin = origin
        self.tags = tags or _EMPTY_TAGS
        self.max_runtime = max_runtime
        self.key = key
        self.trace_id: str | None = None
        self.span_id: str | None = None
        self.forced_status: Status | None = None
        self.extras: dict[str, object] = {}
        self.announced = False
        """Whether its ``running`` record was published (runs that end quickly never are)."""
        self.token: object = None
        """The in-run integration's own handle (the ``current_run`` context token)."""

    @property
    def lateness_s(self) -> float:
        """Seconds between the fire time that was due and the true start."""
        return (self.started_at - self.scheduled_at).total_seconds()

    @property
    def elapsed_s(self) -> float:
        """Seconds since the run started (monotonic clock)."""
        return time.perf_counter() - self._t0

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
