"""The metric families the metrics sink exports: names, types, help texts, default buckets.

Labels are bounded: ``job`` (the job's *name*, never its id) and ``status`` (a terminal
status) on the job families; ``sink`` and ``channel``/``outcome`` on the tracker's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import pairwise
from typing import Final, NamedTuple

from ..._exceptions import ConfigurationError
from ..._record import Status

RUN_STATUSES: Final[tuple[Status, ...]] = tuple(sorted(s for s in Status if s.is_terminal))
"""The ``status`` label values of ``jobtracker_runs_total`` (``running`` is not one)."""

STARTED_STATUSES: Final[frozenset[Status]] = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.INTERRUPTED}
)
"""Terminal statuses of runs that really started (they have a duration and a lateness)."""

FAILURE_STATUSES: Final[frozenset[Status]] = frozenset({Status.FAILED, Status.TIMED_OUT})
"""Statuses that count as failures (consecutive failures, last failure timestamp)."""

DEFAULT_DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
)  # fmt: skip
"""5 ms … 4 h (plus ``+Inf``): cleanups that take milliseconds and reports that take hours."""

DEFAULT_LATENESS_BUCKETS: Final[tuple[float, ...]] = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
)  # fmt: skip
"""10 ms … 4 h (plus ``+Inf``): from scheduler jitter to a process that was down for hours."""


class Family(NamedTuple):
    name: str
    """The name as exposed (counters end in ``_total``)."""
    type: str
    help: str


RUNS = Family(
    "jobtracker_runs_total",
    "counter",
    "Finished runs of the job by final status (missed counts every fire time it stands for).",
)
DURATION = Family(
    "jobtracker_run_duration_seconds",
    "histogram",
    "Duration of the job's runs that started (succeeded, failed, timed out or interrupted).",
)
LATENESS = Family(
    "jobtracker_run_lateness_seconds",
    "histogram",
    "Seconds between the fire time that was due and the run's true start.",
)
IN_PROGRESS = Family(
    "jobtracker_runs_in_progress", "gauge", "Runs of the job in progress right now."
)
LAST_SUCCESS = Family(
    "jobtracker_last_success_timestamp_seconds",
    "gauge",
    "Unix time the job's last successful run finished (0: never).",
)
LAST_FAILURE = Family(
    "jobtracker_last_failure_timestamp_seconds",
    "gauge",
    "Unix time the job's last failed or timed-out run finished (0: never).",
)
NEXT_RUN = Family(
    "jobtracker_next_run_timestamp_seconds",
    "gauge",
    "Unix time of the job's next fire time, earliest over its job ids (0: none scheduled).",
)
CONSECUTIVE_FAILURES = Family(
    "jobtracker_consecutive_failures",
    "gauge",
    "Failed or timed-out runs of the job since its last success.",
)
PAUSED = Family(
    "jobtracker_job_paused", "gauge", "1 when every job id with this name is paused, else 0."
)

GAUGES: Final[tuple[Family, ...]] = (
    IN_PROGRESS, LAST_SUCCESS, LAST_FAILURE, NEXT_RUN, CONSECUTIVE_FAILURES, PAUSED,
)  # fmt: skip
"""Per-job gauges, in the order they are rendered."""

FLOAT_GAUGES: Final[frozenset[Family]] = frozenset({LAST_SUCCESS, LAST_FAILURE, NEXT_RUN})
"""Per-job gauges whose values are floats (the others are integers)."""

JOB_FAMILIES: Final[tuple[Family, ...]] = (RUNS, DURATION, LATENESS, *GAUGES)
"""Per-job families, in the order they are rendered."""

RECORDS_PENDING = Family(
    "jobtracker_records_pending",
    "gauge",
    "Records accepted by the tracker and not yet handled by every sink.",
)
RECORDS_DROPPED = Family(
    "jobtracker_records_dropped_total",
    "counter",
    "Records dropped because a sink's queue or buffer was full (all sinks).",
)
SINK_ERRORS = Family(
    "jobtracker_sink_errors_total",
    "counter",
    "Exceptions raised by a sink or hook (the jobs were not affected).",
)
ALERTS = Family("jobtracker_alerts_total", "counter", "Alert notifications by channel and outcome.")

HEALTH_FAMILIES: Final[tuple[Family, ...]] = (RECORDS_PENDING, RECORDS_DROPPED, SINK_ERRORS, ALERTS)


def check_buckets(buckets: Iterable[float], what: str) -> tuple[float, ...]:
    """Histogram bounds as a tuple: finite, >= 0, strictly increasing (``+Inf`` is implied)."""
    try:
        bounds = [float(b) for b in buckets]
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{what} must be numbers, got {buckets!r}") from exc
    if bounds and bounds[-1] == math.inf:
        bounds.pop()
    if not bounds:
        raise ConfigurationError(f"{what} need at least one finite bound")
    if any(not math.isfinite(b) for b in bounds):
        raise ConfigurationError(f"{what} must be finite (+Inf is added for you): {bounds!r}")
    if bounds[0] < 0:
        raise ConfigurationError(f"{what} must not be negative: {bounds!r}")
    if any(a >= b for a, b in pairwise(bounds)):
        raise ConfigurationError(f"{what} must be strictly increasing: {bounds!r}")
    return tuple(bounds)
