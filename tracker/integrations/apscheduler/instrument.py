"""Attaching a tracker to an APScheduler 3 scheduler.

Listeners turn scheduler events into records:

* ``SUBMITTED``/``EXECUTED``/``ERROR`` — runs of jobs *not* decorated with
  :func:`tracked_job` (decorated ones are recorded from inside the run, exactly);
  they may arrive in any order (APScheduler can announce EXECUTED before SUBMITTED).
* ``MISSED`` — a ``missed`` record with the fire time that was due.
* ``MAX_INSTANCES`` — a ``skipped`` record per fire time that was not started.
* fire times dropped by coalescing — one ``missed`` record whose ``coalesced`` field
  says how many fire times it stands for.
* job added/modified/removed, paused/resumed — :class:`~tracker.JobState` updates.
* the scheduler resumed — every job learned again from its store: while it was paused,
  another scheduler sharing the store (the active one, for a standby) may have run,
  changed or removed them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_ALL_JOBS_REMOVED,
    EVENT_EXECUTOR_ADDED,
    EVENT_JOB_ADDED,
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_MODIFIED,
    EVENT_JOB_REMOVED,
    EVENT_JOB_SUBMITTED,
    EVENT_SCHEDULER_RESUMED,
    EVENT_SCHEDULER_STARTED,
    JobEvent,
    JobExecutionEvent,
    JobSubmissionEvent,
    SchedulerEvent,
)
from apscheduler.executors.debug import DebugExecutor
from apscheduler.executors.pool import BasePoolExecutor, ProcessPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore

from ... import _context
from ..._hub import Hub
from ..._ids import new_run_id
from ..._record import Execution, Origin, Status
from ...sinks import _job_errors
from .loop_context import restore_wakeups, run_wakeups_in
from .missed import missed_fire_times
from .registry import JobRegistry, KnownJob
from .resolve import instrumented, resolve_apscheduler

logger = logging.getLogger("tracker.apscheduler")

MASK = (
    EVENT_SCHEDULER_STARTED
    | EVENT_SCHEDULER_RESUMED
    | EVENT_EXECUTOR_ADDED
    | EVENT_JOB_ADDED
    | EVENT_JOB_MODIFIED
    | EVENT_JOB_REMOVED
    | EVENT_ALL_JOBS_REMOVED
    | EVENT_JOB_SUBMITTED
    | EVENT_JOB_EXECUTED
    | EVENT_JOB_ERROR
    | EVENT_JOB_MISSED
    | EVENT_JOB_MAX_INSTANCES
)
OUTCOMES = EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
"""Needed only for jobs whose runs are recorded from events (not decorated, or run in
another process): while every known job records its runs from inside, they are not
asked for, and APScheduler does not call the listener once more per run."""
_MAX_COUNTED = 100_000
_MANUAL_KEPT = 1_000
_MANUAL_COPY = re.compile(r"(?s)(.+)#manual-[0-9a-f]{12}")
"""The id run_now() gives a job's one-shot copy: the original id, ``#manual-``, 12 hex digits."""
_MISSED_KEPT = 10_000


class RunsInProgress(RuntimeError):
    """:meth:`SchedulerInstrumentation.run_now` of a job whose ``max_instances`` runs are going."""

    def __init__(self, job_id: str, going: int, max_instances: int) -> None:
        super().__init__(
            f"job {job_id!r} has {going} run(s) in progress and max_instances={max_instances}: "
            "not started again"
        )
        self.job_id = job_id
        self.going = going
        self.max_instances = max_instances


class CoroutineNeverAwaited(RuntimeError):
    """An ``async def`` job ran on an executor that does not await coroutines: it never ran."""


def _never_awaits(executor: object) -> bool:
    """Whether ``executor`` calls job functions without awaiting what they return (the thread
    and process pools, the debug executor, gevent's): an ``async def`` job never runs there.
    Executors not known here (custom ones) are trusted."""
    if isinstance(executor, BasePoolExecutor | DebugExecutor):
        return True
    return any(cls.__name__ == "GeventExecutor" for cls in type(executor).__mro__)


def instrumentation_for(scheduler: Any) -> SchedulerInstrumentation | None:
    """The instrumentation attached to ``scheduler``, if any."""
    return instrumented.get(id(scheduler))


class SchedulerInstrumentation:
    """Listeners and bookkeeping for one scheduler. Create with :meth:`Tracker.instrument`."""

    def __init__(self, scheduler: Any, hub: Hub) -> None:
        self.scheduler = scheduler
        self.hub = hub
        self.registry = JobRegistry()
        self._lock = threading.RLock()
        self._run_now_lock = threading.Lock()  # one run_now() at a time: count, then add
        self._manual: OrderedDict[str, str] = OrderedDict()
        self._missed: OrderedDict[tuple[str, datetime], None] = OrderedDict()
        self._carried: dict[str, dict[str, object]] = {}
        self._warned: set[str] = set()  # jobs said to never run (an async def, not awaited)
        self._handlers: dict[int, Callable[[Any], None]] = {
            EVENT_JOB_SUBMITTED: self._on_submitted,
            EVENT_JOB_EXECUTED: self._on_finished,
            EVENT_JOB_ERROR: self._on_finished,
            EVENT_JOB_MISSED: self._on_missed,
            EVENT_JOB_MAX_INSTANCES: self._on_max_instances,
            EVENT_JOB_ADDED: self._on_changed,
            EVENT_JOB_MODIFIED: self._on_changed,
            EVENT_JOB_REMOVED: self._on_removed,
            EVENT_ALL_JOBS_REMOVED: self._on_all_removed,
            EVENT_SCHEDULER_STARTED: self._on_started,
            EVENT_SCHEDULER_RESUMED: self._on_resumed,
            EVENT_EXECUTOR_ADDED: self._on_executor_added,
        }
        self.on_start: list[Callable[[Any], None]] = []
        """Called with the event each time the scheduler starts, after its jobs are learned."""
        self.on_added: list[Callable[[Any], None]] = []
        """Called with the event each time a job is added, after it is learned."""
        self._mask = MASK
        self._needs_outcomes = False  # once a job needs EXECUTED/ERROR, they stay asked for
        _context.add_resolver(resolve_apscheduler)
        instrumented[id(scheduler)] = self
        scheduler.add_listener(self._on_event, MASK)
        if scheduler.running:
            run_wakeups_in(scheduler, contextvars.copy_context())
            _job_errors.attach_filter()
            self.scan()

    def detach(self) -> None:
        """Stop listening to the scheduler."""
        with contextlib.suppress(KeyError):
            self.scheduler.remove_listener(self._on_event)
        if instrumented.get(id(self.scheduler)) is self:  # (not when another tracker took over)
            restore_wakeups(self.scheduler)
            del instrumented[id(self.scheduler)]

    # -- manual runs -----------------------------------------------------------------

    def run_now(self, job_id: str) -> str:
        """Run the job once, now, without touching its schedule; recorded with origin ``manual``.

        The run goes through the scheduler as a one-shot copy of the job (same function,
        arguments, executor and store) whose records carry the original job's id.
        Returns the one-shot job's id. Raises APScheduler's ``JobLookupError`` for an
        unknown job, and :class:`RunsInProgress` when the job has ``max_instances`` runs in
        progress already (its scheduled ones and earlier manual ones): a job that must not
        overlap is not made to. (A fire time falling due while a manual run goes on is not
        held back by it: APScheduler counts the one-shot copy apart.)
        """
        from apscheduler.jobstores.base import JobLookupError

        with self._run_now_lock:  # (two requests at once must not both see room)
            job = self.scheduler.get_job(job_id)
            if job is None:
                raise JobLookupError(job_id)
            going = self.runs_in_progress(job_id, job.executor)
            if going is not None:
                # Copies added and not yet started (the scheduler paused, or busy) count too.
                going += self._manual_copies_waiting(job_id)
                if going >= job.max_instances:
                    raise RunsInProgress(job_id, going, job.max_instances)
            manual_id = f"{job_id}#manual-{new_run_id()[-12:]}"
            with self._lock:
                self._manual[manual_id] = job_id
                carried = _context.carry()  # e.g. the HTTP request's span, for the run's hooks
                if carried:
                    self._carried[manual_id] = carried
                while len(self._manual) > _MANUAL_KEPT:
                    self._carried.pop(self._manual.popitem(last=False)[0], None)
            self.scheduler.add_job(
                job.func,
                "date",
                run_date=datetime.now(UTC),
                args=job.args,
                kwargs=job.kwargs,
                id=manual_id,
                name=job.name,
                executor=job.executor,
                jobstore=job._jobstore_alias or "default",
                misfire_grace_time=None,
            )
            return manual_id

    def _manual_copies_waiting(self, job_id: str) -> int:
        """run_now() copies of the job still in a store: added, not yet started (a copy is
        taken out of its store as the scheduler submits it)."""
        with self._lock:
            copies = [m for m, original in self._manual.items() if original == job_id]
        return sum(1 for m in copies if self.scheduler.get_job(m) is not None)

    def runs_in_progress(self, job_id: str, executor: str) -> int | None:
        """How many runs of the job (manual ones included) its executor has going, if it says
        (APScheduler's executors count them per job id for ``max_instances``)."""
        counts = getattr(self.scheduler._executors.get(executor), "_instances", None)
        if not isinstance(counts, dict):
            return None
        manual = f"{job_id}#manual-"
        return sum(
            int(n)
            for key, n in list(counts.items())
            if key == job_id or str(key).startswith(manual)
        )

    def claim_missed(self, job_id: str, scheduled_at: datetime) -> bool:
        """Whether the fire time is not yet recorded as ``missed``; claims it if so.

        APScheduler's MISSED event and the watchdog's overdue check may both see the same
        fire time: whichever comes first records it, the other is dropped.
        """
        key = (job_id, scheduled_at.astimezone(UTC))
        with self._lock:
            if key in self._missed:
                return False
            self._missed[key] = None
            while len(self._missed) > _MISSED_KEPT:
                self._missed.popitem(last=False)
        return True

    def manual_origin(self, job_id: str) -> str | None:
        """The original job id when ``job_id`` is a one-shot made by :meth:`run_now`."""
        return self._manual.get(job_id) if self._manual else None

    def carried(self, job_id: str) -> dict[str, object] | None:
        """What :func:`~tracker._context.carry` captured when :meth:`run_now` made ``job_id``."""
        return self._carried.get(job_id) if self._carried else None

    # -- jobs ------------------------------------------------------------------------

    def scan(self, *, forget_missing: bool = False) -> None:
        """Learn every job of every store (on start, or when attached to a running scheduler).

        With ``forget_missing``, known jobs no longer in any store are forgotten (not
        reported vanished): on resume, when another scheduler may have removed them.
        """
        before = set(self.registry.jobs) if forget_missing else set()
        jobs = self.scheduler.get_jobs()
        known_jobs = self.registry.jobs
        for job in jobs:
            known = known_jobs.get(job.id) if forget_missing else None
            if known is not None and known.next_run_at == getattr(job, "next_run_time", None):
                continue  # (on resume: its next fire time is the one learned; 5,000 jobs, 1 ms)
            self._learn(job)
        if forget_missing:
            for job_id in before.difference(job.id for job in jobs):
                self._forget(job_id)
        if not self._needs_outcomes:
            self._set_mask(MASK & ~OUTCOMES)

    def _learn(self, job: Any) -> KnownJob:
        copy = _MANUAL_COPY.fullmatch(job.id) if "#manual-" in job.id else None
        with self._lock:
            if copy is not None and job.id not in self._manual:
                # A run_now() copy this process did not make: still in a persistent store from
                # before a restart (or made by another scheduler on the store). Its run is a
                # manual run of the original job.
                self._manual[job.id] = copy.group(1)
            previous = self.registry.get(job.id)  # (a one-shot job is removed as it starts)
            known = self.registry.put(KnownJob.from_job(job))
            known.expected_next = known.next_run_at if known.next_run_at else known.expected_next
        if previous is not None and previous.in_run and not self._records_in_run(known):
            known.replaced_in_run_at = datetime.now(UTC)
        if not self._needs_outcomes and not self._records_in_run(known):
            self._needs_outcomes = True
            self._set_mask(MASK)
        if self.hub.wants_jobs and self.manual_origin(known.job_id) is None:
            self.hub.job_changed(known.state())
        return known

    def _set_mask(self, mask: int) -> None:
        """Change which events APScheduler sends the listener (in place, under its lock:
        removing and adding the listener again could lose or double an event)."""
        if mask == self._mask:
            return
        scheduler = self.scheduler
        with scheduler._listeners_lock:
            scheduler._listeners = [
                (callback, mask if callback == self._on_event else old)
                for callback, old in scheduler._listeners
            ]
            self._mask = mask

    def _refresh(self, job_id: str, jobstore: str | None) -> None:
        try:
            job = self.scheduler.get_job(job_id, jobstore)
        except Exception:
            logger.exception("tracker could not read job %r from its store", job_id)
            return
        if job is not None:
            self._learn(job)

    def _forget(self, job_id: str) -> None:
        with self._lock:
            known = self.registry.remove(job_id)
        if known is not None and self.hub.wants_jobs and self.manual_origin(job_id) is None:
            self.hub.job_changed(known.state(removed=True))

    def _known(self, job_id: str) -> KnownJob | None:
        known = self.registry.get(job_id)
        if known is None:
            self._refresh(job_id, None)
            known = self.registry.get(job_id)
        return known

    def _records_in_run(self, known: KnownJob | None) -> bool:
        if known is None:
            return False
        in_run = known.in_run
        if in_run is None:
            executor = self.scheduler._executors.get(known.executor)
            if known.is_async and _never_awaits(executor) and not known.never_runs:
                known.never_runs = True
            if known.never_runs and known.job_id not in self._warned:
                self._warned.add(known.job_id)
                logger.error(
                    "job %r is an async function on executor %r (%s), which calls it without "
                    "awaiting it: its code never runs (APScheduler reports it executed). Run it "
                    "on an AsyncIOScheduler, or make it a plain function; tracker records its "
                    "runs as failed",
                    known.job_id,
                    known.executor,
                    type(executor).__name__,
                )
            in_run = (
                known.tracked
                and not known.never_runs
                and not isinstance(executor, ProcessPoolExecutor)
            )
            if executor is not None:  # (the default one is made when the scheduler starts)
                known.in_run = in_run
        return in_run

    # -- events ----------------------------------------------------------------------

    def _on_event(self, event: SchedulerEvent) -> None:
        handler = self._handlers.get(event.code)
        if handler is None:
            return
        try:
            handler(event)
        except Exception as exc:  # never break the scheduler's event loop
            self.hub.report_error("apscheduler", exc)

    def _on_finished(self, event: JobExecutionEvent) -> None:
        known = self._known(event.job_id)
        key = (self, event.job_id, event.scheduled_run_time)
        if not self.hub.has_event_run(key):
            if self._records_in_run(known):
                # Recorded from inside the run. (A run opened from its submission is closed
                # here even so: the job was replaced by a decorated one while it was going.)
                return
            replaced = known.replaced_in_run_at if known is not None else None
            if replaced is not None and event.scheduled_run_time <= replaced:
                latest = self.hub.latest_fire_time(event.job_id)
                if latest is not None and latest >= event.scheduled_run_time:
                    return  # a run of the job it replaced, recorded from inside the run
        job_id, origin = self._identity(event.job_id)
        error, traceback = event.exception, event.traceback
        if error is None and known is not None and known.never_runs:
            error = CoroutineNeverAwaited(
                f"executor {known.executor!r} called the async function without awaiting it: "
                "the job's code did not run (APScheduler reported it executed)"
            )
            traceback = None
        self.hub.event_finished(
            key,
            job_id=job_id,
            origin=origin,
            job_name=known.name if known else event.job_id,
            scheduled_at=event.scheduled_run_time.astimezone(UTC),
            error=error,
            traceback=traceback,
            tags=known.tags if known else None,
        )

    def _on_missed(self, event: JobExecutionEvent) -> None:
        claimed = self.claim_missed(event.job_id, event.scheduled_run_time)
        in_run = self._records_in_run(self._known(event.job_id))
        if in_run and not claimed:
            return
        record = self._missed_record(event.job_id, event.scheduled_run_time)
        if in_run:
            self.hub.record(record)
            return
        # Its runs are known from events, and APScheduler announces a missed fire time's
        # submission too (its run_job only then finds it too late): no run took place.
        key = (self, event.job_id, event.scheduled_run_time)
        self.hub.event_missed(key, record, recorded=not claimed)

    def _missed_record(self, job_id: str, run_time: datetime) -> Execution:
        return self._make_record(
            job_id,
            Status.MISSED,
            run_time,
            message="The fire time passed beyond the job's misfire_grace_time before it ran.",
        )

    def _on_max_instances(self, event: JobSubmissionEvent) -> None:
        known = self._known(event.job_id)
        for run_time in event.scheduled_run_times:
            self._record(
                event.job_id,
                Status.SKIPPED,
                run_time,
                message="Not started: the job's max_instances runs were still in progress.",
            )
        self._advance(known, event.scheduled_run_times)

    def _on_changed(self, event: JobEvent) -> None:
        self._refresh(event.job_id, event.jobstore)
        if event.code == EVENT_JOB_ADDED:
            self._call_each(self.on_added, event)

    def _call_each(self, callbacks: list[Callable[[Any], None]], event: SchedulerEvent) -> None:
        for callback in list(callbacks):
            try:
                callback(event)
            except Exception as exc:  # one must not keep the others from running
                self.hub.report_error("apscheduler", exc)

    def _on_removed(self, event: JobEvent) -> None:
        self._forget(event.job_id)

    def _on_all_removed(self, event: SchedulerEvent) -> None:
        for job_id in list(self.registry.jobs):
            self._forget(job_id)

    def _on_started(self, event: SchedulerEvent) -> None:
        # In start(), before its first wake-up: the context jobs of an AsyncIOScheduler start
        # from is start()'s, not that of whoever calls add_job() later (see .loop_context).
        run_wakeups_in(self.scheduler, contextvars.copy_context())
        # Its executors' loggers exist now: APScheduler's report of a failure is dropped on
        # each of them where a tracker reports failures itself (see sinks._job_errors).
        _job_errors.attach_filter()
        self.scan()
        self._call_each(self.on_start, event)

    def _on_executor_added(self, event: SchedulerEvent) -> None:
        _job_errors.attach_filter()  # its logger exists once the executor is started

    def _on_resumed(self, event: SchedulerEvent) -> None:
        # Dispatched before the scheduler's first look at its due jobs. A paused scheduler
        # does not advance its jobs, but another one sharing the store (the active instance,
        # for a standby) may have: their next fire times are the stores', not those learned
        # before the pause (which would make every fire time it ran look coalesced away).
        # No other scheduler shares a memory store: with only those, nothing changed unseen
        # (and the jobs are not read again on the scheduler's resume: 5,000, a millisecond).
        stores = self.scheduler._jobstores
        if stores and all(type(store) is MemoryJobStore for store in stores.values()):
            return
        self.scan(forget_missing=True)

    def _on_submitted(self, event: JobSubmissionEvent) -> None:
        # On the scheduler's thread for every run: the usual case (a known job recorded from
        # inside its runs, fired on time) takes as few calls as it can.
        known = self.registry.get(event.job_id) or self._known(event.job_id)
        run_times = event.scheduled_run_times
        if known is not None and run_times:
            expected = known.expected_next
            if expected is not None and expected < run_times[0]:
                self._count_coalesced(known, run_times[0])
        if known is None or (known.in_run is not True and not self._records_in_run(known)):
            job_id, origin = self._identity(event.job_id)
            for run_time in run_times:
                self.hub.event_started(
                    (self, event.job_id, run_time),
                    job_id=job_id,
                    origin=origin,
                    job_name=known.name if known else event.job_id,
                    scheduled_at=run_time.astimezone(UTC),
                    tags=known.tags if known else None,
                )
        if known is not None and self.registry.jobs.get(known.job_id) is known:
            self._advance(known, run_times)

    def _identity(self, job_id: str) -> tuple[str, Origin]:
        original = self.manual_origin(job_id)
        return (original, Origin.MANUAL) if original is not None else (job_id, Origin.SCHEDULED)

    def _advance(self, known: KnownJob | None, run_times: list[datetime]) -> None:
        """After a submission, compute the next fire time (as APScheduler just did)."""
        if known is None or not run_times or self.manual_origin(known.job_id) is not None:
            return
        if self.registry.jobs.get(known.job_id) is not known:
            # Removed meanwhile: a one-shot job is removed (and announced) before its
            # submission is. Nothing to advance, and it must not come back as a paused job.
            return
        try:
            # Without the job's jitter (``schedule``): the trigger would draw another random
            # delay than APScheduler did. The scheduler's next fire time is this one, or up
            # to the jitter later.
            nxt = known.schedule.get_next_fire_time(run_times[-1], datetime.now(UTC))
        except Exception:
            nxt = None
        nxt = nxt.astimezone(UTC) if nxt is not None else None
        changed = nxt != known.next_run_at
        known.expected_next = nxt
        known.next_run_at = nxt
        if changed and self.hub.wants_jobs:
            self.hub.job_changed(known.state())

    def _count_coalesced(self, known: KnownJob, first_run_time: datetime) -> None:
        expected = known.expected_next
        if expected is None or expected >= first_run_time:
            return
        # With jitter, ``expected`` is the earliest the scheduler's next fire time can be; it
        # drew up to ``jitter`` more: only fire times more than that before the one submitted
        # were dropped. (For an interval trigger the random delays add up from one fire time
        # to the next, so a long gap's count may exceed the dropped fire times by a few.)
        jitter = known.jitter
        last = first_run_time - jitter if jitter is not None else first_run_time
        if expected >= last:
            return
        count = 0
        first: datetime | None = None
        current: datetime | None = expected
        trigger = known.schedule
        while current is not None and current < last and count < _MAX_COUNTED:
            # Not those the watchdog recorded missed already (it saw them overdue while the
            # scheduler was blocked): each fire time is counted once.
            if (known.job_id, current.astimezone(UTC)) not in self._missed:
                count += 1
                first = first or current
            nxt = trigger.get_next_fire_time(current, current + timedelta(microseconds=1))
            if nxt is not None and nxt <= current:
                break
            current = nxt
        if count and first is not None:
            expected = first
            message = (
                f"{count} fire time(s) from {expected.astimezone(UTC).isoformat()} to before "
                f"{first_run_time.astimezone(UTC).isoformat()} were coalesced into one run "
                "(coalesce=True)."
            )
            self.hub.record(
                missed_fire_times(known.job_id, known.name, expected, count, message, known.tags)
            )

    def _record(self, job_id: str, status: Status, run_time: datetime, *, message: str) -> None:
        self.hub.record(self._make_record(job_id, status, run_time, message=message))

    def _make_record(
        self, job_id: str, status: Status, run_time: datetime, *, message: str
    ) -> Execution:
        known = self._known(job_id)
        return Execution(
            run_id=new_run_id(),
            job_id=job_id,
            job_name=known.name if known else job_id,
            status=status,
            scheduled_at=run_time.astimezone(UTC),
            finished_at=datetime.now(UTC),
            lateness_s=(datetime.now(UTC) - run_time).total_seconds(),
            error_message=message,
            tags=known.tags if known else {},
        )
