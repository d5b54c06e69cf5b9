"""The scheduler side of the watchdog: overdue fire times and vanished jobs.

* **Overdue → missed.** Every pass of the watchdog (0.25 s), each job's next expected
  fire time — computed by the job's own trigger, so time zones and DST changes are
  APScheduler's own — is compared with the clock. When the fire time plus a grace
  period (``grace``, or the job's ``misfire_grace_time`` if longer) has passed with no
  submission, the fire time is recorded as ``missed`` (once: APScheduler's own MISSED
  event for the same fire time, if it comes later, is not recorded again). This
  catches a scheduler that is blocked, a job store that can't be read, an event loop
  that a job stalled. Paused jobs and a paused or stopped scheduler are never overdue,
  and the grace counts from when the scheduler was (re)started. A job with ``jitter``
  gets the jitter on top of the grace (its fire times here are its trigger's without
  jitter, the earliest APScheduler's can be). A job with ``misfire_grace_time=None`` is
  never called missed here: APScheduler runs the fire time however late (or, coalescing,
  drops it, and the integration counts it missed then); the watchdog logs a warning, once
  per fire time, that it is overdue. A scheduler that stopped submitting altogether is
  still reported by its jobs with a finite grace, and by the ``JobOverdue`` Prometheus
  rule.
* **Vanished.** A job store that can't restore a job (its function was renamed, its
  pickle broke) logs ``Unable to restore job "x" -- removing it`` and deletes it without
  any event: that log line is caught at once. Every ``vanish_interval`` seconds the
  known jobs are also compared with ``scheduler.get_jobs()`` (on a thread of its own,
  since a job store may be slow), for jobs deleted behind the scheduler's back.
  Either way a :class:`~tracker.JobVanished` notice is published and the job is
  forgotten (a :class:`~tracker.JobState` with ``removed=True``). While the scheduler is
  paused (a standby sharing its job store with an active instance, which may remove
  jobs), the comparison is not made; resuming learns the stores' jobs afresh.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.base import STATE_RUNNING

from ..._ids import new_run_id
from ..._record import Execution, JobVanished, Status
from ...watchdog import WatchdogSettings
from .resolve import instrumented

if TYPE_CHECKING:
    from ...watchdog import Watchdog
    from .instrument import SchedulerInstrumentation
    from .registry import KnownJob

logger = logging.getLogger("tracker.watchdog")

_TICK = timedelta(microseconds=1)
_MAX_TIMES = 1_000
"""Overdue fire times of one job counted in one pass (one record stands for them all)."""
_RESTORE_MESSAGE = "Unable to restore job"


def attach(watchdog: Watchdog, instrumentation: SchedulerInstrumentation) -> SchedulerWatch:
    """Watch ``instrumentation``'s scheduler from ``watchdog``'s thread."""
    watch = SchedulerWatch(instrumentation, watchdog.settings)
    watchdog.add_check(watch)
    return watch


class SchedulerWatch:
    """Overdue and vanished jobs of one instrumented scheduler (a watchdog :class:`Check`)."""

    name = "apscheduler"

    def __init__(
        self,
        instrumentation: SchedulerInstrumentation,
        settings: WatchdogSettings | None = None,
        *,
        start_thread: bool = True,
    ) -> None:
        settings = settings or WatchdogSettings()
        self.instrumentation = instrumentation
        self.scheduler = instrumentation.scheduler
        self.hub = instrumentation.hub
        self.grace = settings.grace
        self.vanish_interval = settings.vanish_interval
        self.running_since: datetime | None = None
        """Since when the scheduler has been seen running without a pause."""
        self.missed = 0
        """Fire times recorded as missed by this watch."""
        self.vanished = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._handler = _RestoreFailures(self)
        logging.getLogger("apscheduler.jobstores").addHandler(self._handler)
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(
                target=self._vanish_loop, name="tracker-watchdog-jobs", daemon=True
            )
            self._thread.start()

    # -- Check protocol ------------------------------------------------------------------

    def check(self, now: datetime) -> None:
        """One pass: record the fire times that are overdue (called by the watchdog)."""
        if not self.attached or self.scheduler.state != STATE_RUNNING:
            self.running_since = None
            return
        if self.running_since is None:
            self.running_since = now
            return
        if self.record_overdue(now, self.running_since):
            self._wake.set()  # a job that stopped firing may have vanished: look now

    @property
    def attached(self) -> bool:
        """Whether the instrumentation still listens to the scheduler (its registry is current)."""
        return instrumented.get(id(self.scheduler)) is self.instrumentation

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        logging.getLogger("apscheduler.jobstores").removeHandler(self._handler)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    # -- overdue -----------------------------------------------------------------------

    def record_overdue(self, now: datetime, since: datetime | None = None) -> list[Execution]:
        """Record as ``missed`` every fire time due before ``now`` minus the grace period.

        ``since`` is when the scheduler started running (grace counts from there for
        fire times that were already due). Returns the records published.
        """
        inst = self.instrumentation
        records = []
        latest = now - timedelta(seconds=self.grace)  # fast path: nothing due after this
        for known in list(inst.registry.jobs.values()):
            expected = known.expected_next
            if expected is None or expected > latest or known.next_run_at is None:
                continue  # not due yet; paused; or no fire time left
            if inst.manual_origin(known.job_id) is not None:
                continue
            record = self._overdue(known, now, since)
            if record is not None:
                records.append(record)
        return records

    def _overdue(self, known: KnownJob, now: datetime, since: datetime | None) -> Execution | None:
        expected = known.expected_next
        assert expected is not None
        misfire = known.misfire_grace_time
        grace = timedelta(seconds=max(self.grace, misfire or 0.0))
        # Fire times here are the trigger's without jitter: the scheduler's may come up to the
        # jitter later, and are only overdue once that has passed too.
        wait = grace + known.jitter if known.jitter is not None else grace

        def due(fire_time: datetime) -> bool:
            start = fire_time if since is None or fire_time >= since else since
            return start + wait <= now

        if not due(expected):
            return None
        inst = self.instrumentation
        started = self.hub.latest_fire_time(known.job_id)
        if started is not None and started >= expected:
            # Its run started: not missed (a job store that blocks the scheduler delays the
            # announcement of the submission, not the run). Watch the fire times after it.
            try:
                nxt = known.schedule.get_next_fire_time(started, started + _TICK)
            except Exception:
                nxt = None
            with inst._lock:
                if (
                    known.expected_next == expected
                    and inst.registry.jobs.get(known.job_id) is known
                ):
                    known.expected_next = nxt.astimezone(UTC) if nxt is not None else None
            return None
        if misfire is None:
            # misfire_grace_time=None: APScheduler runs this fire time however late it is
            # (or, coalescing, drops it then and the integration counts it missed). Calling it
            # missed now would give the fire time two rows: say it is late, once, and wait.
            if known.late_noted != expected:
                known.late_noted = expected
                logger.warning(
                    "job %r is overdue: no run started for the fire time %s within %g s; "
                    "with misfire_grace_time=None it is not recorded missed (it runs when the "
                    "scheduler catches up)",
                    known.job_id,
                    expected.isoformat(),
                    wait.total_seconds(),
                )
                self._wake.set()  # a job that stopped firing may have vanished: look now
            return None
        times = [expected]
        following: datetime | None = None
        while len(times) < _MAX_TIMES:
            try:
                nxt = known.schedule.get_next_fire_time(times[-1], times[-1] + _TICK)
            except Exception:
                nxt = None
            if nxt is None or nxt <= times[-1]:
                break
            nxt = nxt.astimezone(UTC)
            if not due(nxt):
                following = nxt
                break
            times.append(nxt)
        with inst._lock:
            if known.expected_next != expected or inst.registry.jobs.get(known.job_id) is not known:
                return None  # the scheduler moved on meanwhile
            known.expected_next = following
        claimed = [t for t in times if inst.claim_missed(known.job_id, t)]
        if not claimed:
            return None
        first = claimed[0]
        if len(claimed) == 1:
            message = (
                f"No run started for the fire time {first.isoformat()} within "
                f"{wait.total_seconds():g} s: the scheduler did not submit it."
            )
        else:
            message = (
                f"No run started for {len(claimed)} fire times from {first.isoformat()} to "
                f"{claimed[-1].isoformat()} within {wait.total_seconds():g} s of each: "
                "the scheduler did not submit them."
            )
        record = Execution(
            run_id=new_run_id(),
            job_id=known.job_id,
            job_name=known.name,
            status=Status.MISSED,
            scheduled_at=first,
            finished_at=now,
            lateness_s=(now - first).total_seconds(),
            error_type="tracker.Overdue",
            error_message=message,
            coalesced=len(claimed) if len(claimed) > 1 else 0,
            tags=known.tags,
        )
        self.missed += len(claimed)
        logger.warning("job %r is overdue: %s", known.job_id, message)
        self.hub.record(record)
        return record

    # -- vanished ----------------------------------------------------------------------

    def _vanish_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.vanish_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check_vanished()
            except Exception as exc:
                self.hub.report_error("watchdog:apscheduler", exc)

    def check_vanished(self, confirm: float = 0.5) -> list[str]:
        """Compare known jobs with the scheduler's jobs; report those gone without a remove.

        A job missing from ``get_jobs()`` is looked up again after ``confirm`` seconds
        (a remove made through the scheduler announces itself just after the store
        forgot the job). Returns the ids reported.
        """
        if not self.attached or self.scheduler.state != STATE_RUNNING:
            # Stopped, or paused: a paused scheduler (a standby sharing its job store with an
            # active one) does not follow its jobs; the other scheduler may remove them.
            # Resuming learns the stores afresh.
            return []
        inst = self.instrumentation
        known = [
            job_id for job_id in list(inst.registry.jobs) if inst.manual_origin(job_id) is None
        ]
        if not known:
            return []
        try:
            present = {job.id for job in self.scheduler.get_jobs()}
        except Exception as exc:
            logger.warning("tracker could not list the scheduler's jobs: %s", exc)
            return []
        candidates = [job_id for job_id in known if job_id not in present]
        if not candidates:
            return []
        if confirm > 0 and self._stop.wait(confirm):
            return []
        if self.scheduler.state != STATE_RUNNING:
            return []  # paused (or stopped) meanwhile
        gone = []
        for job_id in candidates:
            if job_id not in inst.registry.jobs:
                continue  # removed through the scheduler meanwhile
            try:
                if self.scheduler.get_job(job_id) is not None:
                    continue
            except Exception:
                continue
            gone.append(job_id)
            self.report_vanished(
                job_id,
                "it is no longer in its job store, yet it was not removed through the scheduler",
            )
        return gone

    def report_vanished(self, job_id: str, reason: str) -> None:
        """Forget ``job_id`` and publish a :class:`~tracker.JobVanished` notice."""
        inst = self.instrumentation
        if inst.manual_origin(job_id) is not None:
            return
        known = inst.registry.jobs.get(job_id)
        name = known.name if known is not None else job_id
        tags = known.tags if known is not None else {}
        inst._forget(job_id)
        self.vanished += 1
        logger.error("job %r vanished: %s", job_id, reason)
        self.hub._publish(
            JobVanished(
                job_id=job_id,
                job_name=name,
                reason=reason,
                detected_at=datetime.now(UTC),
                tags=tags,
            )
        )


class _RestoreFailures(logging.Handler):
    """Catches APScheduler job stores' ``Unable to restore job "x" -- removing it``."""

    def __init__(self, watch: SchedulerWatch) -> None:
        super().__init__()
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not isinstance(record.msg, str) or not record.msg.startswith(_RESTORE_MESSAGE):
                return
            if not record.args or not isinstance(record.args, tuple):
                return
            alias = record.name.rsplit(".", 1)[-1]
            stores: Any = getattr(self.watch.scheduler, "_jobstores", {})
            if alias not in stores or not self.watch.attached:
                return
            job_id = record.args[0]
            if isinstance(job_id, bytes | bytearray):  # RedisJobStore logs the raw hash key
                job_id = bytes(job_id).decode("utf-8", "backslashreplace")
            job_id = str(job_id)
            error = record.exc_info[1] if record.exc_info else None
            why = f": {type(error).__name__}: {error}" if error is not None else ""
            self.watch.report_vanished(
                job_id, f"job store {alias!r} could not restore it and deleted it{why}"
            )
        except Exception as exc:  # never break the job store
            self.watch.hub.report_error("watchdog:apscheduler", exc)
