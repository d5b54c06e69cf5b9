"""What the metrics say about each job name, folded from the hub's events.

Plain Python (no prometheus-client): :class:`MetricsState` applies
:class:`~tracker.Execution` and :class:`~tracker.JobState` events and remembers which
job names changed since the last scrape (``dirty``), so only those are re-rendered.

Several job ids may share a name (one-shot jobs made from one function); the series are
per name and aggregate over them — see :meth:`JobSeries.values`.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from itertools import accumulate
from typing import Any, NamedTuple

from ..._plain import RUN_ROW_LENGTH, run_row_timing
from ..._record import Execution, JobState, Status
from .families import FAILURE_STATUSES, RUN_STATUSES, STARTED_STATUSES

_STATUS_INDEX = {status: i for i, status in enumerate(RUN_STATUSES)}
_STATUS_OF_TEXT = {status.value: status for status in Status}
_MISSED = _STATUS_INDEX[Status.MISSED]
_MAX_RUNNING = 100_000
"""Runs counted in progress whose end was never seen (dropped records) are forgotten past this."""
_GONE_KEPT = 10_000
"""Removed job ids remembered, so a one-shot job's last run (published after its removal)
still lets the series go away afterwards."""
_ECHO_WINDOW = 30.0
"""Seconds after a removed job's run started in which a state without a next run is taken
for that run's late echo (it follows the start at once: same thread, same batch or next)."""


class Histogram:
    """Bucket counts (not cumulative), with ``+Inf`` as the last bucket, and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` (clamped at 0); NaN and infinities are ignored."""
        if not 0.0 <= value < math.inf:
            if value != value or value > 0:  # NaN, +Inf
                return
            value = 0.0
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        """Counts per ``le`` bound, ``+Inf`` last (which is also the total count)."""
        return list(accumulate(self.counts))


class JobValues(NamedTuple):
    """Every value of one job's series at one moment."""

    runs: list[int]
    """Per status of :data:`~.families.RUN_STATUSES`."""
    duration: list[int]
    duration_sum: float
    lateness: list[int]
    lateness_sum: float
    in_progress: int
    last_success: float
    last_failure: float
    next_run: float
    consecutive_failures: int
    paused: int


class Seed(NamedTuple):
    """What a job name's gauges were before this process started (from the run history)."""

    last_success: float
    last_failure: float
    consecutive_failures: int


class JobSeries:
    """The series of one job name."""

    __slots__ = (
        "consecutive_failures",
        "duration",
        "in_progress",
        "last_failure",
        "last_success",
        "lateness",
        "live",
        "name",
        "runs",
        "scheduled",
        "text",
    )

    def __init__(self, name: str, duration: tuple[float, ...], lateness: tuple[float, ...]) -> None:
        self.name = name
        self.runs = [0] * len(RUN_STATUSES)
        self.duration = Histogram(duration)
        self.lateness = Histogram(lateness)
        self.in_progress = 0
        self.last_success = 0.0
        self.last_failure = 0.0
        self.consecutive_failures = 0
        self.live: dict[str, tuple[float | None, bool]] = {}
        """Job ids with this name still in a scheduler: (next fire time, paused)."""
        self.scheduled = False
        """Known from a scheduler (so it can be removed), not only from runs."""
        self.text: Any = None
        """Rendering cache of :mod:`.text` (templates and fragments)."""

    @property
    def idle_and_gone(self) -> bool:
        """No job id with this name remains in a scheduler and no run is in progress."""
        return self.scheduled and not self.live and self.in_progress == 0

    def values(self) -> JobValues:
        """Current values; gauges aggregated over the job ids that share the name.

        Next run: the earliest next fire time among them (0 when none is scheduled).
        Paused: 1 only when there is at least one and all of them are paused.
        """
        live = self.live.values()
        next_run = min((t for t, _ in live if t is not None), default=0.0)
        paused = 1 if live and all(p for _, p in live) else 0
        return JobValues(
            self.runs,
            self.duration.cumulative(),
            self.duration.sum,
            self.lateness.cumulative(),
            self.lateness.sum,
            self.in_progress,
            self.last_success,
            self.last_failure,
            next_run,
            self.consecutive_failures,
            paused,
        )


def _epoch(value: datetime | None) -> float | None:
    return float(value.timestamp()) if value is not None else None


class MetricsState:
    """Job series by name, updated from events; not thread-safe (the sink holds a lock)."""

    def __init__(
        self,
        *,
        duration_buckets: tuple[float, ...],
        lateness_buckets: tuple[float, ...],
        removed_linger: float,
        clock: Callable[[], float] = time.monotonic,
        make_text: Callable[[str], object] | None = None,
    ) -> None:
        self.duration_buckets = duration_buckets
        self.lateness_buckets = lateness_buckets
        self.removed_linger = removed_linger
        self.clock = clock
        self.make_text = make_text
        """Builds a new name's rendering cache when it first appears (off the scrape path)."""
        self.jobs: dict[str, JobSeries] = {}
        self.dirty: set[str] = set()
        """Names whose values changed since the last render."""
        self.structure_changed = True
        """A name appeared or went away since the last render."""
        self._running: dict[str, str] = {}
        self._owner: dict[str, str] = {}
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._echoing: dict[str, float] = {}
        """Removed job ids whose run started after the removal (a one-shot job's last one),
        with when: the state that follows that run's submission is a late echo, not a
        re-added job."""
        self._expiring: dict[str, float] = {}
        self._seeds: dict[str, Seed] = {}
        """Seeds of names not shown yet: applied when the name appears (see :meth:`seed`)."""

    # -- seeding from the run history --------------------------------------------------

    def seed(self, seeds: Mapping[str, Seed]) -> None:
        """Carry each name's last success and failure, and its failures since that success,
        over from before this process started (once; runs seen since count on top).

        A name shown already takes its seed at once; any other only when a scheduler or a
        run makes it appear, so jobs that are gone from every scheduler never come back.
        """
        self._seeds.update(seeds)
        for name in self._seeds.keys() & self.jobs.keys():
            self._apply_seed(self.jobs[name], self._seeds.pop(name))

    def _apply_seed(self, series: JobSeries, seed: Seed) -> None:
        if series.last_success == 0.0:  # no success since this process started
            series.consecutive_failures += max(0, seed.consecutive_failures)
        series.last_success = max(series.last_success, seed.last_success)
        series.last_failure = max(series.last_failure, seed.last_failure)
        self.dirty.add(series.name)

    # -- events ----------------------------------------------------------------------

    def apply(self, event: object) -> None:
        """Fold one event in; unknown event types are ignored."""
        if isinstance(event, Execution):
            self._execution(event)
        elif isinstance(event, JobState):
            self._job_state(event)
        elif type(event) is tuple and len(event) == RUN_ROW_LENGTH:
            self._run_row(event)

    def _series(self, name: str) -> JobSeries:
        series = self.jobs.get(name)
        if series is None:
            series = self.jobs[name] = JobSeries(name, self.duration_buckets, self.lateness_buckets)
            if self.make_text is not None:
                series.text = self.make_text(name)
            self.structure_changed = True
            seed = self._seeds.pop(name, None)
            if seed is not None:
                self._apply_seed(series, seed)
        self.dirty.add(name)
        return series

    def _job_state(self, state: JobState) -> None:
        job_id = state.job_id
        if state.removed:
            name = self._owner.pop(job_id, state.job_name)
            self._gone[job_id] = name
            self._echoing.pop(job_id, None)
            if len(self._gone) > _GONE_KEPT:
                self._echoing.pop(self._gone.popitem(last=False)[0], None)
            series = self.jobs.get(name)
            if series is not None:
                series.live.pop(job_id, None)
                self.dirty.add(name)
                self._check_gone(series)
            return
        echo = self._echoing.pop(job_id, None)
        if state.next_run_at is None and echo is not None and self.clock() - echo < _ECHO_WINDOW:
            # A late echo of a removed one-shot job (its last submission is announced after
            # its removal, and this state after that run's start), not a re-added job: it
            # must not bring the job id back to life. A job re-added paused under the same
            # id (no run just before) is shown paused.
            return
        name = state.job_name
        previous = self._owner.get(job_id)
        streak = 0
        if previous is not None and previous != name:  # renamed with modify_job(name=...)
            old = self.jobs.get(previous)
            if old is not None:
                old.live.pop(job_id, None)
                if not old.live:
                    # The failure streak goes with the job: the old name's alert resolves
                    # now, not once its series are gone (removed_linger).
                    streak, old.consecutive_failures = old.consecutive_failures, 0
                self.dirty.add(previous)
                self._check_gone(old)
        self._owner[job_id] = name
        self._gone.pop(job_id, None)
        fresh = name not in self.jobs
        series = self._series(name)
        if fresh:
            series.consecutive_failures += streak
        series.scheduled = True
        series.live[job_id] = (_epoch(state.next_run_at), state.paused)
        self._expiring.pop(name, None)

    def _execution(self, record: Execution) -> None:
        status = record.status
        if status is not Status.RUNNING:
            self._ended(
                record.job_id,
                record.job_name,
                record.run_id,
                status,
                record.coalesced,
                record.lateness_s,
                record.duration_s,
                _epoch(record.finished_at) or _epoch(record.started_at) or 0.0,
            )
            return
        name = record.job_name
        series = self._run_series(record.job_id, name)
        if record.run_id in self._running:
            return
        if record.job_id in self._gone:
            self._echoing[record.job_id] = self.clock()
        self._running[record.run_id] = name
        series.in_progress += 1
        if record.lateness_s is not None:
            series.lateness.observe(record.lateness_s)
        if len(self._running) > _MAX_RUNNING:
            self._end_running(next(iter(self._running)))
        self._expiring.pop(name, None)

    def _run_row(self, row: tuple[Any, ...]) -> None:
        """A finished run as the hub sends it when every sink takes run rows: what its record
        would count (:func:`~tracker._plain.run_row_timing`), without making it."""
        lateness, finished = run_row_timing(row)
        status = _STATUS_OF_TEXT[row[3]]
        self._ended(row[1], row[2], row[0], status, 0, lateness, row[6], finished)

    def _run_series(self, job_id: str, name: str) -> JobSeries:
        """The series a run of ``job_id`` (named ``name``) counts in."""
        if name not in self.jobs and job_id in self._gone:
            # A one-shot job's last run is published after its removal: show it, then drop.
            self._series(name).scheduled = True
        return self._series(name)

    def _ended(
        self,
        job_id: str,
        name: str,
        run_id: str | None,
        status: Status,
        coalesced: int,
        lateness: float | None,
        duration: float | None,
        finished: float,
    ) -> None:
        """A run ended in ``status`` (or fire times were ``missed``, ``skipped``)."""
        series = self._run_series(job_id, name)
        counted = run_id is not None and self._end_running(run_id)
        index = _STATUS_INDEX.get(status)
        if index is None:
            return
        series.runs[index] += max(1, coalesced) if index == _MISSED else 1
        if status in STARTED_STATUSES:
            if not counted and lateness is not None:
                series.lateness.observe(lateness)
            if duration is not None:
                series.duration.observe(duration)
            if status is Status.SUCCEEDED:
                series.consecutive_failures = 0
                series.last_success = max(series.last_success, finished)
            elif status in FAILURE_STATUSES:
                series.consecutive_failures += 1
                series.last_failure = max(series.last_failure, finished)
        self._check_gone(series)

    def _end_running(self, run_id: str) -> bool:
        name = self._running.pop(run_id, None)
        if name is None:
            return False
        series = self.jobs.get(name)
        if series is not None and series.in_progress > 0:
            series.in_progress -= 1
            self.dirty.add(name)
            self._check_gone(series)
        return True

    # -- removal ---------------------------------------------------------------------

    def _check_gone(self, series: JobSeries) -> None:
        """(Re)arm the removal of a name that has no job id left and no run in progress."""
        if series.idle_and_gone:
            self._expiring[series.name] = self.clock() + self.removed_linger
        else:
            self._expiring.pop(series.name, None)

    def expire(self) -> None:
        """Drop the series of names gone for longer than ``removed_linger``."""
        if not self._expiring:
            return
        now = self.clock()
        for name, deadline in list(self._expiring.items()):
            if deadline > now:
                continue
            del self._expiring[name]
            series = self.jobs.get(name)
            if series is not None and series.idle_and_gone:
                del self.jobs[name]
                self.dirty.discard(name)
                self.structure_changed = True
