"""The record: one :class:`Execution` per run of a job, and the :class:`Status` it ended in.

Everything here is plain Python; sinks and integrations build on these types.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple

_EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


class Status(enum.StrEnum):
    """How a run stands or how it ended."""

    RUNNING = "running"
    """Started and not finished yet."""
    SUCCEEDED = "succeeded"
    """Returned without raising."""
    FAILED = "failed"
    """Raised an exception."""
    MISSED = "missed"
    """A fire time passed without a run (misfire, coalesced away, or the process was down)."""
    SKIPPED = "skipped"
    """Not started because the job's ``max_instances`` was reached."""
    TIMED_OUT = "timed_out"
    """Ran past its ``max_runtime``."""
    INTERRUPTED = "interrupted"
    """The process stopped or died while the run was in progress."""

    @property
    def is_terminal(self) -> bool:
        """Whether a run in this status has ended (every status but ``running``)."""
        return self is not Status.RUNNING


class Origin(enum.StrEnum):
    """What started a run."""

    SCHEDULED = "scheduled"
    """The scheduler fired it from its trigger."""
    MANUAL = "manual"
    """Somebody asked for it (the HTTP API's ``POST /jobs/{id}/run``)."""
    DIRECT = "direct"
    """The decorated function was called directly, outside any scheduler."""


class Execution(NamedTuple):
    """One run of one job, as recorded. Immutable.

    Timestamps are timezone-aware UTC. ``scheduled_at`` is the fire time that was due
    (for a direct call, the moment of the call); ``started_at`` is the true start,
    measured inside the run when the job is decorated with :func:`tracked_job`.

    (A ``NamedTuple`` rather than a frozen dataclass: two records are built on every
    run's path, and a frozen dataclass takes four times as long to build — see
    ``bench/overhead.py``. Build it with keyword arguments; copy with :meth:`evolve`.)
    """

    run_id: str
    job_id: str
    job_name: str
    status: Status
    scheduled_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    lateness_s: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    instance: str = ""
    origin: Origin = Origin.SCHEDULED
    coalesced: int = 0
    """For a ``missed`` record made by coalescing: how many fire times it stands for."""
    trace_id: str | None = None
    span_id: str | None = None
    tags: Mapping[str, str] = _EMPTY_TAGS

    @property
    def is_finished(self) -> bool:
        """Whether this record is the run's last word (its status is terminal)."""
        return self.status is not Status.RUNNING

    def evolve(self, **changes: Any) -> Execution:
        """A copy with ``changes`` applied."""
        return self._replace(**changes)


class JobState(NamedTuple):
    """What is known about a job itself (not one run): sent to sinks when it changes.

    ``removed`` is true once the job is gone from its scheduler; ``next_run_at`` is
    ``None`` for a paused or finished job.
    """

    job_id: str
    job_name: str
    trigger: str = ""
    next_run_at: datetime | None = None
    paused: bool = False
    removed: bool = False
    tags: Mapping[str, str] = _EMPTY_TAGS
    max_runtime: float | None = None


class RunTimedOut(NamedTuple):
    """A run passed its ``max_runtime`` and is still running: published by the watchdog.

    Sent once, at the deadline, while the run goes on (a thread can't be stopped; an
    ``async`` job may have been cancelled, see ``cancelled``). The run's own record
    follows when it ends, with status ``timed_out`` and a tag ``outcome`` saying how
    the job itself ended.
    """

    run: Execution
    """The run as a ``running`` record (run id, job, fire time, true start)."""
    max_runtime: float
    """The limit it passed, in seconds."""
    detected_at: datetime
    cancelled: bool = False
    """Whether the watchdog cancelled the run's asyncio task."""


class JobVanished(NamedTuple):
    """A job disappeared from its scheduler without being removed through it.

    For instance a persistent job store that could not restore the job and dropped it,
    or a row deleted behind the scheduler's back. Published by the watchdog.
    """

    job_id: str
    job_name: str
    reason: str
    detected_at: datetime
    tags: Mapping[str, str] = _EMPTY_TAGS
