"""What the integration knows about each job of a scheduler, kept in memory.

Filled when the scheduler starts (every job in every store) and kept current from
job events, so listeners never query a job store on a run's path. Removed jobs stay
findable for a while, because APScheduler announces a one-shot job's removal before
the submission of its last run.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.combining import BaseCombiningTrigger
from apscheduler.util import iscoroutinefunction_partial

from ..._decorator import job_options
from ..._record import JobState

_REMOVED_KEPT = 10_000
_new_state = JobState._make


def without_jitter(trigger: Any) -> tuple[Any, float]:
    """``trigger`` without its random ``jitter`` (a copy; the trigger itself when it has none),
    and the most the jitter delays a fire time, in seconds.

    APScheduler adds up to ``jitter`` seconds, drawn at random, to each fire time: asking the
    trigger itself again draws another delay than the one the scheduler drew. Without it, each
    fire time is the earliest the scheduler's can be; the scheduler's is at most the returned
    seconds later. The jitters of the triggers a combining trigger (``OrTrigger``,
    ``AndTrigger``) is made of count too.
    """
    try:
        own = float(getattr(trigger, "jitter", None) or 0.0)
    except (TypeError, ValueError):
        own = 0.0
    parts: list[Any] | None = None
    inner = 0.0
    if isinstance(trigger, BaseCombiningTrigger):
        plain = [without_jitter(t) for t in trigger.triggers]
        inner = max((slack for _, slack in plain), default=0.0)
        if inner:
            parts = [t for t, _ in plain]
    if not own and not inner:
        return trigger, 0.0
    try:
        copied = copy.copy(trigger)
        copied.jitter = None
        if parts is not None:
            copied.triggers = parts
    except Exception:  # a trigger that can't be copied: its own fire times, jitter and all
        return trigger, own + inner
    return copied, own + inner


@dataclass(slots=True)
class KnownJob:
    job_id: str
    name: str
    trigger: Any
    executor: str
    tracked: bool
    """Decorated with @tracked_job: runs are recorded from inside the run, not from events."""
    next_run_at: datetime | None
    expected_next: datetime | None
    """The next fire time we expect to see submitted; earlier ones were coalesced away."""
    tags: dict[str, str]
    max_runtime: float | None
    trigger_text: str = ""
    misfire_grace_time: float | None = None
    """Seconds APScheduler still runs a late fire time (``None``: however late)."""
    in_run: bool | None = None
    """Whether its runs are recorded from inside the run (decorated, and not in another
    process); ``None`` until the integration has looked at its executor."""
    is_async: bool = False
    """Its function is an ``async def`` (APScheduler awaits it only on an asyncio executor)."""
    never_runs: bool = False
    """An ``async def`` on an executor that calls it without awaiting it: its code never runs."""
    replaced_in_run_at: datetime | None = None
    """When it replaced a job whose runs were recorded from inside, if it did: a run of that
    one, due before then, may still end (and its end be announced) after."""
    schedule: Any = None
    """Its trigger without jitter (the trigger itself when it has none): fire times computed
    with it are the earliest the scheduler's can be. Set from ``trigger`` when not given."""
    jitter: timedelta | None = None
    """The most APScheduler's ``jitter`` delays a fire time past ``schedule``'s (``None``:
    no jitter, the scheduler's fire times are ``schedule``'s)."""
    late_noted: datetime | None = None
    """The overdue fire time the watchdog last logged, for a job it does not call missed
    (``misfire_grace_time=None``): logged once, not on every look."""

    def __post_init__(self) -> None:
        if self.schedule is None:
            self.schedule, slack = without_jitter(self.trigger)
            self.jitter = timedelta(seconds=slack) if slack else None

    @classmethod
    def from_job(cls, job: Any) -> KnownJob:
        options = job_options(job.func)
        next_run = getattr(job, "next_run_time", None)
        next_run = next_run.astimezone(UTC) if next_run is not None else None
        return cls(
            job_id=job.id,
            name=job.name,
            trigger=job.trigger,
            executor=job.executor,
            tracked=options is not None,
            next_run_at=next_run,
            expected_next=next_run,
            tags=dict(options.tags) if options else {},
            max_runtime=options.max_runtime if options else None,
            trigger_text=str(job.trigger),
            misfire_grace_time=getattr(job, "misfire_grace_time", None),
            is_async=iscoroutinefunction_partial(job.func),
        )

    def state(self, *, removed: bool = False) -> JobState:
        # Positional (a third of the keyword construction's cost): one per removed one-shot
        # job, on the scheduler's thread.
        return _new_state(
            (
                self.job_id,
                self.name,
                self.trigger_text,
                None if removed else self.next_run_at,
                self.next_run_at is None and not removed,
                removed,
                self.tags,
                self.max_runtime,
            )
        )


class JobRegistry:
    """job id → :class:`KnownJob`, plus recently removed jobs."""

    def __init__(self) -> None:
        self.jobs: dict[str, KnownJob] = {}
        self._removed: OrderedDict[str, KnownJob] = OrderedDict()

    def put(self, known: KnownJob) -> KnownJob:
        previous = self.jobs.get(known.job_id)
        if previous is not None and previous.trigger is known.trigger:
            known.expected_next = previous.expected_next or known.expected_next
        self.jobs[known.job_id] = known
        self._removed.pop(known.job_id, None)
        return known

    def remove(self, job_id: str) -> KnownJob | None:
        known = self.jobs.pop(job_id, None)
        if known is not None:
            self._removed[job_id] = known
            if len(self._removed) > _REMOVED_KEPT:
                self._removed.popitem(last=False)
        return known

    def get(self, job_id: str) -> KnownJob | None:
        return self.jobs.get(job_id) or self._removed.get(job_id)
