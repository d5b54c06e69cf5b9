"""The alert sink: runs the policy on every record, stores flips, hands them to the channels.

It is an ordinary sink, so it works on its own thread and the job never waits for it.
Most records change nothing (a healthy job succeeding) and are dismissed from an
in-memory mirror of the job states without touching the database; a record that may
change a job's state (a failure, a notice, the first success after one) is applied
to the job's row read fresh from the database, and the row and its flips are written
in one optimistic transaction. Each new flip is then claimed and queued on every
channel's worker (see :mod:`.delivery`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from ..._ids import new_run_id
from ..._record import Execution, JobState, JobVanished, RunTimedOut, Status
from ..._sink import BaseSink, TrackerEvent
from ..storable import ID_LENGTH, storable_text
from .channels.base import error_summary
from .channels.text import duration, when
from .config import AlertConfig
from .delivery import DROPPED, FAILED, OUTCOMES, RETRIED, SENT, SKIPPED, ChannelWorker, Item
from .model import Alert, AlertKind, JobHealth, RunSummary
from .policy import AlertEvent, AlertPolicy, Health, Transition, relevant, remind, step
from .state import RETRYING, SENDING, AlertStore

logger = logging.getLogger("tracker.alerts")

Counter = Callable[[str, str, int], None]
"""``(channel, outcome, amount)``, e.g. :meth:`MetricsSink.count_alert`."""

_BACKLOG = 10_000
_LOOKED_UP_KEPT = 100_000
_RESUME_EVERY = 10.0
_UNCLAIMED_AFTER = timedelta(seconds=30)
_STALE_AFTER = timedelta(seconds=60)
_REFRESH_MARGIN = timedelta(seconds=30)
_PRUNE_EVERY = 3600.0
_DELIVERY_STATUS = {
    SENT: "sent",
    RETRIED: RETRYING,
    FAILED: "failed",
    DROPPED: "dropped",
    SKIPPED: "skipped",
}


def own_engine(engine: Engine) -> Engine:
    """An engine on the same database with a pool of its own (same connect hooks).

    The alert sink's connections then live and die with it: its threads (and channel
    workers recording outcomes) never hold a connection of the tracker's pool while the
    history writer disposes of it at shutdown. An in-memory SQLite database can only be
    shared, not reopened: its engine is used as it is.
    """
    if isinstance(engine.pool, StaticPool | SingletonThreadPool):
        return engine
    return Engine(engine.pool.recreate(), engine.dialect, engine.url)


def _identity(event: AlertEvent) -> tuple[str, str]:
    """The job's id and name, as the alert tables can store them (``VARCHAR(255)``, no NUL)."""
    if isinstance(event, RunTimedOut):
        job_id, job_name = event.run.job_id, event.run.job_name
    else:
        job_id, job_name = event.job_id, event.job_name
    return storable_text(job_id, ID_LENGTH), storable_text(job_name, ID_LENGTH)


class AlertSink(BaseSink):
    """Alerts on changes of job state, with the state kept in the database.

    Made by :class:`~tracker.Tracker` when alerts are on (``tracker.alerts``).
    """

    name = "alerts"

    def __init__(
        self,
        engine: Engine,
        *,
        instance: str,
        config: AlertConfig | None = None,
        counter: Counter | None = None,
    ) -> None:
        self.config = config or AlertConfig()
        self.instance = instance
        self.engine = own_engine(engine)
        self.store = AlertStore(self.engine, instance)
        self._counter = counter
        self.counts: dict[tuple[str, str], int] = {}
        self._counts_lock = threading.Lock()
        channels = self.config.resolved_channels()
        self.config.check_policy_channels([channel.name for channel in channels])
        self.channels = {channel.name: channel for channel in channels}
        self.workers = {
            channel.name: ChannelWorker(
                channel,
                capacity=self.config.queue_size,
                max_attempts=self.config.max_attempts,
                backoff=self.config.backoff,
                max_backoff=self.config.max_backoff,
                on_outcome=self._outcome,
                on_attempt=self._attempt,
            )
            for channel in channels
        }
        for name in self.workers:
            for outcome in OUTCOMES:
                self._count(name, outcome, 0)
        self._reminders = self.config.policy.renotify_seconds is not None or any(
            p.renotify_seconds is not None for p in self.config.job_policies.values()
        )
        self._cache: dict[str, Health] = {}
        self._looked_up: dict[str, float] = {}  # job id -> when its stored state was last read
        self._backlog: list[AlertEvent] = []
        self._ready = False
        self._failures = 0
        self._retry_at = 0.0
        self.last_error: str | None = None
        self._refreshed_at = self._started_at = datetime.now(UTC)
        now = time.monotonic()
        self._next_refresh = now + self.config.refresh_interval
        self._next_remind = now
        self._next_resume = now
        self._next_prune = now + 60.0
        self._warned: set[str] = set()
        self._closed = False
        self._try(self._prepare)

    # -- sink protocol -----------------------------------------------------------------

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        work = self._backlog
        self._backlog = []
        # Jobs with an event waiting to be applied: their cached state is out of date
        # until it is, so each later event of theirs is applied too (a success right
        # after a failure in the same batch is a recovery, not the noise of a healthy job).
        waiting = {_identity(event)[0] for event in work}
        self._look_up_unknown(events)
        for event in events:
            if isinstance(event, Execution):
                if not event.status.is_terminal:
                    continue
            elif not isinstance(event, RunTimedOut | JobVanished | JobState):
                continue
            if self._screen(event, waiting):
                work.append(event)
        if not work:
            return
        if time.monotonic() < self._retry_at:  # the database is failing: wait for the backoff
            self._keep(work)
            return
        self._process(work)

    def _look_up_unknown(self, events: Sequence[TrackerEvent]) -> None:
        """Read the stored state of jobs that succeeded here and that this instance knows no
        state of: another instance on the database may have put one down since the last
        refresh, and its recovery must not be dropped as the noise of a healthy job (it was,
        until a later success here after a refresh). One query for them all; each job at most
        once a refresh interval."""
        if not self._ready:
            return
        now = time.monotonic()
        due = now - self.config.refresh_interval
        looked_up = self._looked_up
        unknown: set[str] = set()
        for event in events:
            if isinstance(event, Execution) and event.status is Status.SUCCEEDED:
                job_id = _identity(event)[0]
                if job_id not in self._cache and looked_up.get(job_id, due - 1.0) < due:
                    unknown.add(job_id)
        if not unknown:
            return
        if len(looked_up) > _LOOKED_UP_KEPT:
            looked_up.clear()
        for job_id in unknown:
            looked_up[job_id] = now
        try:
            found = self.store.load_many(sorted(unknown))
        except SQLAlchemyError as exc:  # the periodic refresh catches up
            logger.debug("tracker could not read alert states: %s", exc)
            return
        for health in found:
            self._cache.setdefault(health.job_id, health)

    def _screen(self, event: AlertEvent, waiting: set[str]) -> bool:
        """Whether ``event`` is to be applied; adds its job to ``waiting`` when it is."""
        job_id, job_name = _identity(event)
        policy = self.config.policy_for(job_id, job_name)
        if job_id in waiting:
            return policy.enabled
        if relevant(policy, self._cache.get(job_id), event):
            waiting.add(job_id)
            return True
        return False

    def tick(self) -> None:
        now = time.monotonic()
        if not self._ready:
            if now >= self._retry_at:
                self._try(self._prepare)
            return
        if self._backlog and now >= self._retry_at:
            work, self._backlog = self._backlog, []
            self._process(work)
        if now >= self._next_refresh:
            self._next_refresh = now + self.config.refresh_interval
            self._try(self._refresh)
        if self._reminders and now >= self._next_remind:
            self._next_remind = now + 1.0
            self._try(self._remind_all)
        if now >= self._next_resume:
            self._next_resume = now + _RESUME_EVERY
            self._try(self._resume)
        if now >= self._next_prune:
            self._next_prune = now + _PRUNE_EVERY
            self._try(lambda: self.store.prune(self.config.keep))

    def flush(self, timeout: float) -> bool:
        """Store every state change seen so far (delivery goes on in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._ready:
                self._try(self._prepare)
            if self._ready and self._backlog:
                work, self._backlog = self._backlog, []
                self._process(work)
            if self._ready and not self._backlog:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, 0.05))

    def close(self, timeout: float) -> None:
        """Give pending alerts ``shutdown_timeout`` (at most ``timeout``); release the rest."""
        budget = max(0.0, min(timeout, self.config.shutdown_timeout))
        deadline = time.monotonic() + budget
        for worker in self.workers.values():
            worker.stop(deadline)
        left: list[tuple[str, str]] = []
        for name, worker in self.workers.items():
            items = worker.join(max(0.0, deadline - time.monotonic()) + 0.05)
            left += [(item.alert.id, name) for item in items]
        if left:
            logger.warning(
                "%d alert deliveries did not finish before shutdown; they are handed back for "
                "the next start (or another replica) to send",
                len(left),
            )
            try:
                self.store.release(left)
            except (SQLAlchemyError, OSError) as exc:
                logger.error("tracker could not hand back %d alert deliveries: %s", len(left), exc)
        # An attempt still in flight may finish later: its delivery, handed back, is no
        # longer written to from here (the next sender may deliver it again).
        self._closed = True
        self.engine.dispose()

    # -- inspection ----------------------------------------------------------------------

    def wait_delivered(self, timeout: float = 5.0) -> bool:
        """Wait until no alert is queued or being sent on any channel."""
        deadline = time.monotonic() + timeout
        return all(
            w.wait_idle(max(0.0, deadline - time.monotonic())) for w in self.workers.values()
        )

    def health(self, job_id: str) -> Health | None:
        """The stored alert state of a job (``None``: never had a problem)."""
        return self.store.load(job_id)

    def flips(self, job_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Stored state changes, newest first."""
        return self.store.flips(job_id, limit)

    @property
    def ready(self) -> bool:
        return self._ready

    # -- state changes -----------------------------------------------------------------

    def _prepare(self) -> None:
        self._cache = self.store.load_all()
        self._refreshed_at = datetime.now(UTC)
        self._ready = True

    def _process(self, work: list[AlertEvent]) -> None:
        if not self._ready and not self._try(self._prepare):
            self._keep(work)
            return
        by_job: dict[str, list[AlertEvent]] = {}
        for event in work:
            by_job.setdefault(_identity(event)[0], []).append(event)
        jobs = list(by_job.items())
        for index, (job_id, events) in enumerate(jobs):
            if not self._try(lambda: self._apply(job_id, events)):  # noqa: B023 - called now
                self._keep([e for _, evs in jobs[index:] for e in evs])
                return

    def _keep(self, work: list[AlertEvent]) -> None:
        self._backlog = (work + self._backlog)[-_BACKLOG:]

    def _apply(self, job_id: str, events: list[AlertEvent]) -> None:
        name = _identity(events[-1])[1]
        policy = self.config.policy_for(job_id, name)
        for _ in range(5):
            health = self.store.load(job_id) or Health(job_id=job_id, job_name=name)
            before = dataclasses.replace(health)
            now = datetime.now(UTC)
            flips: list[tuple[Alert, bool]] = []
            for event in events:
                transition = step(policy, health, event, now)
                if transition is not None:
                    flips.append((self._alert(health, transition, policy, now), transition.notify))
            if health == before or (not health.stored and health.is_default and not flips):
                self._cache[job_id] = health
                return
            if self.store.save(health, flips, now):
                self._cache[job_id] = health
                for alert, notify in flips:
                    if notify:
                        self._send(alert, policy)
                return
        logger.warning(
            "tracker could not update the alert state of job %r: it kept changing", job_id
        )

    def _refresh(self) -> None:
        since = self._refreshed_at - _REFRESH_MARGIN
        self._refreshed_at = datetime.now(UTC)
        for health in self.store.load_changed(since):
            cached = self._cache.get(health.job_id)
            if cached is None or cached.version < health.version:
                self._cache[health.job_id] = health

    def _remind_all(self) -> None:
        now = datetime.now(UTC)
        for job_id, cached in list(self._cache.items()):
            if cached.state is JobHealth.UP:
                continue
            policy = self.config.policy_for(job_id, cached.job_name)
            if not policy.enabled or remind(policy, dataclasses.replace(cached), now) is None:
                continue
            health = self.store.load(job_id)
            if health is None:
                continue
            transition = remind(policy, health, now)
            if transition is None:
                self._cache[job_id] = health
                continue
            alert = self._alert(health, transition, policy, now)
            if self.store.save(health, [(alert, True)], now):
                self._cache[job_id] = health
                self._send(alert, policy)

    # -- delivery ------------------------------------------------------------------------

    def _send(self, alert: Alert, policy: AlertPolicy) -> None:
        names = (
            list(self.workers)
            if policy.channels is None
            else [name for name in policy.channels if name in self.workers]
        )
        if policy.channels is not None:
            for name in policy.channels:
                if name not in self.workers and name not in self._warned:
                    self._warned.add(name)
                    logger.warning("alert policy names channel %r, which is not configured", name)
        if not self.store.claim(alert.id, names, datetime.now(UTC)):
            return  # another replica took it
        for name in names:
            self.workers[name].submit(alert)

    def _resume(self) -> None:
        now = datetime.now(UTC)
        for _flip_id, alert in self.store.unprocessed(now - _UNCLAIMED_AFTER):
            self._send(alert, self.config.policy_for(alert.job_id, alert.job_name))
        rows = self.store.resumable(list(self.workers), now - _STALE_AFTER, self._started_at)
        for flip_id, channel, status, instance, _attempts, alert in rows:
            if self.store.take(flip_id, channel, status, instance):
                logger.info(
                    "resuming delivery of alert %s to %s (%s by %s)",
                    flip_id,
                    channel,
                    status,
                    instance,
                )
                self.workers[channel].submit(alert)

    def _attempt(self, channel: str, item: Item) -> None:
        if self._closed:
            return
        try:
            self.store.set_delivery(item.alert.id, channel, SENDING, attempts=item.attempts)
        except (SQLAlchemyError, OSError) as exc:
            logger.debug("could not record an alert attempt: %s", exc)

    def _outcome(self, channel: str, outcome: str, item: Item, error: str | None) -> None:
        if self._closed and outcome == FAILED:
            outcome = RETRIED  # an attempt that outlived the shutdown: handed back, tried again
        self._count(channel, outcome, 1)
        alert = item.alert
        what = f"alert {alert.id} ({alert.kind.value}, job {alert.job_id!r})"
        if outcome == SENT:
            level = logging.DEBUG if channel == "log" else logging.INFO
            logger.log(level, "%s sent to %s (attempt %d)", what, channel, item.attempts)
        elif outcome == RETRIED and self._closed:
            logger.warning("%s to %s failed after shutdown (handed back): %s", what, channel, error)
        elif outcome == RETRIED:
            logger.warning("%s to %s failed, will retry: %s", what, channel, error)
        elif outcome == SKIPPED:
            logger.debug("%s not sent to %s: the channel is inactive", what, channel)
        else:
            logger.error("%s to %s %s: %s", what, channel, outcome, error)
        if self._closed:
            return
        try:
            self.store.set_delivery(
                alert.id, channel, _DELIVERY_STATUS[outcome], attempts=item.attempts, error=error
            )
        except (SQLAlchemyError, OSError) as exc:
            logger.debug("could not record an alert outcome: %s", exc)

    def _count(self, channel: str, outcome: str, amount: int) -> None:
        with self._counts_lock:
            key = (channel, outcome)
            self.counts[key] = self.counts.get(key, 0) + amount
        if self._counter is not None:
            try:
                self._counter(channel, outcome, amount)
            except Exception:
                logger.debug("counting an alert outcome failed", exc_info=True)

    # -- building alerts -------------------------------------------------------------------

    def _alert(self, health: Health, t: Transition, policy: AlertPolicy, now: datetime) -> Alert:
        e = t.execution
        run = RunSummary.from_execution(e) if e is not None else None
        label = (
            health.job_name
            if health.job_name == health.job_id
            else (f"{health.job_name} (id {health.job_id})")
        )
        ratio = health.failure_ratio(policy)
        kind = t.kind
        detail: str | None = None
        max_runtime: float | None = None
        error = error_summary(e.error_type, e.error_message) if e is not None else ""
        since = t.since or health.down_since
        if t.reminder:
            down_for = duration((now - since).total_seconds()) if since else "a while"
            summary = f"{label}: {kind.value.replace('_', ' ')} for {down_for}"
            if health.consecutive_failures:
                summary += f" ({health.consecutive_failures} failures in a row)"
        elif kind is AlertKind.FAILED:
            if t.by_ratio and ratio is not None:
                failed, runs = health.recent.count("F"), len(health.recent)
                summary = f"{label} failed {failed} of its last {runs} runs"
            else:
                count = health.consecutive_failures
                summary = f"{label} failed" + (f" {count} times in a row" if count > 1 else "")
            summary += f": {error}" if error else ""
        elif kind is AlertKind.TIMED_OUT:
            if t.timed_out is not None:
                max_runtime = t.timed_out.max_runtime
                summary = (
                    f"{label} is still running after its max_runtime of {duration(max_runtime)}"
                )
                if t.timed_out.cancelled:
                    summary += "; its task is being cancelled"
            else:
                summary = f"{label} ran past its max_runtime"
                if e is not None and e.duration_s is not None:
                    summary += f" (it took {duration(e.duration_s)})"
        elif kind is AlertKind.MISSED:
            due = e.scheduled_at if e is not None else None
            summary = f"{label} missed its run due at {when(due)}"
            if e is not None and e.coalesced > 1:
                summary += f" (and {e.coalesced - 1} more)"
            detail = e.error_message if e is not None else None
        elif kind is AlertKind.VANISHED:
            summary = f"{label} vanished from its scheduler"
            detail = t.vanished.reason if t.vanished is not None else None
        else:  # recovered
            if t.cause is AlertKind.VANISHED:
                summary = f"{label} is back in its scheduler"
            else:
                summary = f"{label} recovered: it succeeded again"
                if since is not None:
                    summary += f" after {duration((now - since).total_seconds())} down"
                if t.cause is not None:
                    summary += f" ({t.cause.value.replace('_', ' ')})"
        severity_kind = t.cause if t.reminder and t.cause is not None else kind
        tags = e.tags if e is not None else (t.vanished.tags if t.vanished is not None else {})
        return Alert(
            id=new_run_id(),
            kind=kind,
            severity=policy.severity(severity_kind),
            job_id=health.job_id,
            job_name=health.job_name,
            state=t.new,
            previous_state=t.old,
            at=now,
            summary=summary,
            detail=detail,
            reminder=t.reminder,
            cause=t.cause,
            down_since=since if kind is not AlertKind.RECOVERED else t.since,
            consecutive_failures=health.consecutive_failures,
            failure_ratio=ratio,
            max_runtime=max_runtime,
            run=run,
            instance=e.instance if e is not None and e.instance else self.instance,
            tags=dict(tags),
        )

    # -- database trouble ------------------------------------------------------------------

    def _try(self, fn: Callable[[], object]) -> bool:
        try:
            fn()
        except (SQLAlchemyError, OSError) as exc:
            self._failures += 1
            delay = min(30.0, 0.1 * 2 ** min(self._failures, 8))
            self._retry_at = time.monotonic() + delay
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if self._failures == 1 or self.last_error != message:
                logger.warning("tracker alerts cannot use the database (%s); retrying", message)
            self.last_error = message
            return False
        if self._failures:
            logger.info("tracker alerts: the database is back")
        self._failures = 0
        return True
