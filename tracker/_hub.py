"""The hub: keeps per-run state and fans every lifecycle change out to the sinks.

It knows nothing about APScheduler, SQL or Prometheus. Integrations tell it that
runs begin and end (in-run, from :func:`tracked_job`; or from scheduler events, in
whatever order they arrive); sinks receive the resulting records on their own
threads. Nothing a sink or a hook does can reach the job: exceptions are caught,
counted per sink and logged (rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Protocol

from ._dispatch import SinkWorker
from ._errors import UNPRINTABLE, describe
from ._ids import checked_instance, new_instance_id
from ._plain import EXACT_SECONDS, RunRow, plain_value
from ._record import Execution, JobState, Origin, Status
from ._run import Run, _new_execution
from ._sink import Sink, TrackerEvent

logger = logging.getLogger("tracker")

_perf_counter = time.perf_counter
_TOMBSTONES = 10_000
_BATCH = 5_000
"""Most finished runs turned into records before they are handed to the sinks."""
_LOG_EVERY_S = 60.0
_FIRED_KEPT = 10_000
_SUCCEEDED = Status.SUCCEEDED
_SCHEDULED = Origin.SCHEDULED
_HUBS: weakref.WeakSet[Hub] = weakref.WeakSet()
"""Every hub of this process, for :func:`_after_fork_in_child`."""


_UTC_KEYS = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Universal", "Etc/Universal", "Zulu", "Etc/Zulu"}
)
_epochs: dict[object, datetime | None] = {}


def _fixed_epoch(tz: tzinfo | None) -> datetime | None:
    """1970-01-01 UTC in ``tz``, if ``tz`` is a fixed offset (``timezone``, a UTC ``ZoneInfo``,
    pytz's UTC): then ``moment - epoch`` (same ``tzinfo``: no offset looked up) is its
    timestamp, for a third of ``timestamp()``'s cost. ``None`` for zones with rules, or
    unknown ones."""
    try:
        return _epochs[tz]
    except KeyError:
        pass
    except TypeError:  # not hashable
        return None
    name = getattr(tz, "key", None) or getattr(tz, "zone", None)  # ZoneInfo's, pytz's
    fixed = isinstance(tz, timezone) or (isinstance(name, str) and name in _UTC_KEYS)
    epoch = _EPOCH.astimezone(tz) if fixed else None
    if len(_epochs) < 64:
        _epochs[tz] = epoch
    return epoch


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _after_fork_in_child() -> None:
    """In a process forked from one with a tracker (gunicorn ``--preload``, multiprocessing's
    ``fork``): the tracker's threads are not there. Each open hub stops tracking here (see
    :meth:`Hub._forked`); the parent's is untouched."""
    for hub in list(_HUBS):
        try:
            hub._forked()
        except Exception:  # never break the fork
            logger.exception("tracker: could not stop the tracker inherited through fork()")


class RunHook(Protocol):
    """Code that wraps each in-run execution on the job's own path (span, log context, scope).

    ``enter`` runs just before the job and returns a token handed back to ``exit``.
    Both must be quick; exceptions are caught and counted, never raised to the job.

    A hook may also have ``name_event_run(run)``, called for a run known only from scheduler
    events (an undecorated job; no ``enter``/``exit``, its code runs elsewhere): it may give the
    run the ids its record is to carry (``set_span_ids``), as ``enter`` does.

    A hook that changes the job's context (makes a span current, binds log variables) may
    also have ``release(run, token)``: undo that, if it is still in place where it is called.
    ``exit`` normally does it; but when the tracker closes a run still in progress
    (:meth:`Hub.close`, at shutdown) ``exit`` runs on the closing thread, where the job's
    context is out of reach, and ``release`` is then called on the job's own thread when
    the job returns. It may therefore be called after ``exit`` has done it already.
    """

    name: str

    def enter(self, run: Run) -> object: ...

    def exit(
        self, run: Run, token: object, status: Status, error: BaseException | None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class HubStats:
    """The tracker's own health."""

    pending: int
    """Records accepted but not yet handled by every sink (queues plus sink backlogs)."""
    dropped: Mapping[str, int]
    """Records dropped per sink because its queue or buffer was full."""
    sink_errors: Mapping[str, int]
    """Exceptions raised by each sink or hook."""
    live_runs: int


def status_for(error: BaseException | None, origin: Origin | None = None) -> Status:
    """The status a run ends in when it raised ``error`` (or nothing).

    ``CancelledError`` is ``interrupted`` (a scheduler shutting down cancels its runs).
    ``SystemExit`` and ``KeyboardInterrupt`` are ``interrupted`` in a direct call, where they
    stop the caller, but ``failed`` in a scheduler's run (``origin`` scheduled or manual):
    APScheduler catches them there, reports the job's error and goes on, so nothing was
    interrupted — and a job ported from a script that ends with ``sys.exit(1)`` on error must
    count (and alert) as failed.
    """
    if error is None:
        return Status.SUCCEEDED
    if isinstance(error, asyncio.CancelledError):
        return Status.INTERRUPTED
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return Status.INTERRUPTED if origin is None or origin is Origin.DIRECT else Status.FAILED
    return Status.FAILED


_INTERRUPTIONS = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)


def reported_error(status: Status, error: BaseException | None) -> BaseException | None:
    """The exception of a run that ended in ``status``, if it is one to report (a span's
    exception event, a Sentry event): a failure's — a ``SystemExit`` in a scheduled run too
    (see :func:`status_for`) — or a timed-out run's; not an interruption that stopped the run
    (a shutdown's or the watchdog's cancel)."""
    if error is None or (status is not Status.FAILED and isinstance(error, _INTERRUPTIONS)):
        return None
    return error


class Hub:
    """Per-run state and fan-out to sinks. Thread-safe.

    The job's own path does as little as it can: :meth:`begin` reads two clocks and
    registers the run as live; :meth:`finish` reads one clock and queues the run. The
    hub's thread turns finished runs into records and hands them to the sinks every
    ``interval`` (and at :meth:`flush`), in batches.

    A run is published once when it ends. Its ``running`` record is published only if it
    is still in progress ``announce_after`` seconds after it started (checked by the
    hub's thread every ``interval``), or at :meth:`flush`: most runs are short, and a
    record nobody would see costs every sink a round of work. Sinks therefore get a
    finished record without a ``running`` one before it for short runs; when both come,
    ``running`` always comes first.
    """

    def __init__(
        self,
        sinks: Iterable[Sink] = (),
        *,
        instance: str | None = None,
        queue_capacity: int = 100_000,
        interval: float = 0.05,
        announce_after: float | None = None,
    ) -> None:
        self.instance = checked_instance(instance) if instance else new_instance_id()
        self.queue_capacity = queue_capacity
        self.interval = interval
        self.announce_after = interval if announce_after is None else announce_after
        self._workers: list[SinkWorker] = []
        self._job_workers: list[SinkWorker] = []  # sinks that want JobState changes
        self._run_rows = False
        """Whether every sink takes finished runs as run rows (``run_rows``)."""
        self._hooks: list[RunHook] = []
        self._lock = threading.Lock()
        self._draining = threading.Lock()
        """Held from taking finished runs to publishing their records: a flush() that finds
        none left waits for those the hub's thread is still turning into records."""
        self._live: dict[Run, Run] = {}
        self._finished: deque[Run] = deque()  # ended runs, how in run.error/duration/final
        self._by_key: dict[Hashable, Run] = {}
        self._tombstones: OrderedDict[Hashable, None] = OrderedDict()
        # job id -> latest fire time (seconds since 1970) of a scheduled run that ended
        self._fired: dict[str, float] = {}
        self._dropped: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._last_log: dict[str, float] = {}
        self._closed = False
        self._fork_of: int | None = None  # the parent's pid, in a process forked from this one
        self._engines: list[Any] = []  # let go of at fork (see own_engine)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tracker-hub", daemon=True)
        self._thread.start()
        for sink in sinks:
            self.add_sink(sink)
        self._pid = os.getpid()
        _HUBS.add(self)

    def _forked(self) -> None:
        """This process was forked from the hub's (its threads stayed there). Stop tracking
        here, loudly: tracked jobs run untracked, flush() is ``False``, close() does nothing.
        Above all, nothing here may act as the parent's instance (same id): no heartbeat, no
        ``stopped_at``, no write; the connections inherited are let go without closing them
        (they are the parent's)."""
        if self._closed or self._pid == os.getpid():
            return
        self._fork_of, self._pid = self._pid, os.getpid()
        self._lock = threading.Lock()  # perhaps held by a thread of the parent at fork()
        self._draining = threading.Lock()
        self._closed = True
        workers, self._workers, self._job_workers, self._hooks = self._workers, [], [], []
        self._live.clear()
        self._finished.clear()
        self._by_key.clear()
        engines = [(w.sink.name, getattr(w.sink, "engine", None)) for w in workers]
        engines += [("database", engine) for engine in self._engines]
        disposed: set[int] = set()
        for name, engine in engines:
            dispose = getattr(engine, "dispose", None)
            if dispose is not None and id(engine) not in disposed:
                disposed.add(id(engine))
                try:
                    dispose(close=False)  # SQLAlchemy's way after fork: the parent's stay open
                except Exception as exc:
                    self.report_error(name, exc)
        logger.error(
            "tracker: this process (pid %d) was forked from the one that created the tracker "
            "(pid %d, instance %s); the tracker's threads did not come along, so it records "
            "nothing here and tracked jobs run untracked. Create the Tracker after the fork "
            "(for instance in the app's lifespan or a post-fork hook, not in a module that "
            "gunicorn --preload imports).",
            self._pid,
            self._fork_of,
            self.instance,
        )

    # -- configuration -------------------------------------------------------------

    def own_engine(self, engine: Any) -> None:
        """In a process forked from this one, let go of ``engine``'s pooled connections without
        closing them (they are the parent's), as the sinks' own engines are: workers forked
        by ``gunicorn --preload`` that read the history would otherwise share the parent's
        connections, and each other's."""
        self._engines.append(engine)

    def add_sink(self, sink: Sink) -> None:
        """Start feeding ``sink`` (on a thread of its own) with everything published from now on."""
        worker = SinkWorker(
            sink,
            capacity=self.queue_capacity,
            interval=self.interval,
            on_error=self.report_error,
            on_drop=self.count_drop,
        )
        with self._draining:  # not while a drain builds rows for the sinks there were
            self._workers = [*self._workers, worker]
            self._run_rows = all(getattr(w.sink, "run_rows", False) for w in self._workers)
        if getattr(sink, "handles_jobs", True):
            self._job_workers = [*self._job_workers, worker]

    def add_hook(self, hook: RunHook) -> None:
        """Wrap every in-run execution with ``hook`` from now on."""
        self._hooks = [*self._hooks, hook]

    @property
    def sinks(self) -> list[Sink]:
        return [w.sink for w in self._workers]

    @property
    def closed(self) -> bool:
        return self._closed

    # -- runs ----------------------------------------------------------------------

    def open_run(
        self,
        *,
        job_id: str,
        job_name: str,
        scheduled_at: datetime | None,
        origin: Origin = Origin.SCHEDULED,
        tags: Mapping[str, str] | None = None,
        max_runtime: float | None = None,
        key: Hashable | None = None,
        started_at: datetime | None = None,
        hooks: bool = True,
        extras: Mapping[str, object] | None = None,
    ) -> Run:
        """A run starts now (or at ``started_at``): enter the hooks and track it as live.

        Its ``running`` record is published if it is still live after ``announce_after``.

        ``extras`` (what the integration carried from where the run was requested) is put
        in ``run.extras`` before the hooks are entered.
        """
        return self.begin(
            job_id,
            job_name,
            scheduled_at,
            origin,
            tags,
            max_runtime,
            extras,
            key,
            started_at,
            hooks,
        )

    def begin(
        self,
        job_id: str,
        job_name: str,
        scheduled_at: datetime | None,
        origin: Origin,
        tags: Mapping[str, str] | None,
        max_runtime: float | None,
        extras: Mapping[str, object] | None,
        key: Hashable | None = None,
        started_at: datetime | None = None,
        hooks: bool = True,
    ) -> Run:
        """:meth:`open_run` with positional arguments: the lean call for the run's own path."""
        run = Run(
            None,
            job_id,
            job_name,
            scheduled_at,
            self.instance,
            origin,
            tags,
            max_runtime,
            key,
            started_at,
        )
        run.hub = self
        if extras:
            run._extras = dict(extras)
        if hooks and self._hooks:
            self.enter_hooks(run)
        self._live[run] = run  # dict operations are atomic: no lock needed to add
        if key is not None:
            self._by_key[key] = run
        return run

    def enter_hooks(self, run: Run) -> None:
        """Enter every hook for ``run`` (before it is made live), keeping their tokens on it
        (not in ``run.extras``: no dictionary for it, on the job's path)."""
        entered: list[tuple[RunHook, object]] = []
        for hook in self._hooks:
            try:
                entered.append((hook, hook.enter(run)))
            except Exception as exc:
                self.report_error(hook.name, exc)
        run._entered = entered

    def close_run(
        self,
        run: Run,
        *,
        error: BaseException | None = None,
        status: Status | None = None,
        finished_at: datetime | None = None,
        error_details: tuple[str, str, str] | None = None,
    ) -> Execution | None:
        """The run ended: exit its hooks and publish its final record now, on this thread.

        The status comes from ``status``, else from the watchdog's ``forced_status``,
        else from ``error``. Returns ``None`` when the run had already been closed
        (for instance as ``interrupted`` when the tracker shut down under it).
        :meth:`finish` is the lean variant for the job's own path.
        """
        duration = _perf_counter() - run._t0
        entered = run._entered
        if entered:  # before the run stops being live: finish() may follow at once
            run._release = entered
        with self._lock:  # after this, the announcer cannot publish it as running
            if self._live.pop(run, None) is None:
                return None
        run.ended = True
        final = self._exit_hooks(run, status, error)
        record = self._final_record(run, final, error, duration, finished_at, error_details)
        self._publish(record)
        return record

    def finish(self, run: Run, error: BaseException | None = None) -> None:
        """The run ended (on the job's own thread): exit its hooks, queue it for the hub's
        thread, which builds and publishes its record. Does nothing if it was closed already.
        Never raises.
        """
        duration = _perf_counter() - run._t0
        run.ended = True
        try:
            if self._live.pop(run, None) is None:  # closed meanwhile (shutdown)
                self._release_hooks(run)
                return
            if run._entered is not None:  # hooks want the status now
                run.final = self._exit_hooks(run, None, error)
            if error is not None:
                run.error = error
            run.duration = duration
            self._finished.append(run)
            if self._closed:  # nobody will drain it: publish now (stopped sinks count it dropped)
                self._drain()
        except Exception as exc:  # never raised to the job
            self.report_error("hub", exc)

    def drain_late(self) -> None:
        """A run ended after :meth:`close` (the job's wrapper queued it): publish it now, as
        :meth:`finish` does then (stopped sinks count it dropped). Never raises."""
        try:
            self._drain()
        except Exception as exc:
            self.report_error("hub", exc)

    def _exit_hooks(self, run: Run, status: Status | None, error: BaseException | None) -> Status:
        if status is not None:
            final = status
        elif run.forced_status is not None:  # the record keeps what happened
            final = run.forced_status
            run.tags = {**run.tags, "outcome": status_for(error, run.origin).value}
        else:
            final = Status.SUCCEEDED if error is None else status_for(error, run.origin)
        entered, run._entered = run._entered, None
        if entered:
            for hook, token in reversed(entered):
                try:
                    hook.exit(run, token, final, error)
                except Exception as exc:
                    self.report_error(hook.name, exc)
        return final

    def _release_hooks(self, run: Run) -> None:
        """On the job's own thread, after :meth:`close_run` ended its run from another one:
        let each hook undo what it did to the job's context (see :class:`RunHook`)."""
        entered, run._release = run._release, None
        for hook, token in reversed(entered or ()):
            release = getattr(hook, "release", None)
            if release is not None:
                try:
                    release(run, token)
                except Exception as exc:
                    self.report_error(hook.name, exc)

    def _final_record(
        self,
        run: Run,
        final: Status | None,
        error: BaseException | None,
        duration: float,
        finished_at: datetime | None = None,
        error_details: tuple[str, str, str] | None = None,
    ) -> Execution:
        if final is None:
            final = self._exit_hooks(run, None, error)
        if run.key is not None:
            self._by_key.pop(run.key, None)
        started = run.started_at
        scheduled = run.scheduled_at
        if run.origin is Origin.SCHEDULED:
            self._note_fired(run.job_id, scheduled.timestamp())
        etype = emessage = etb = None
        if error_details is not None:
            etype, emessage, etb = error_details
        elif error is not None:
            etype, emessage, etb = self._error_details(error)
        if finished_at is None:  # the monotonic duration, not a second wall-clock reading
            finished = started + timedelta(seconds=duration)
        else:
            finished = finished_at
            duration = max(0.0, (finished - started).total_seconds())
        return _new_execution(
            (
                run.run_id,
                run.job_id,
                run.job_name,
                final,
                scheduled,
                started,
                finished,
                duration,
                (started - scheduled).total_seconds(),
                etype,
                emessage,
                etb,
                run.instance,
                run.origin,
                0,
                run.trace_id,
                run.span_id,
                run.tags,
            )
        )

    def _final_run_row(
        self, run: Run, final: Status | None, error: BaseException | None, duration: float
    ) -> RunRow:
        """What the run's record is made from (:mod:`tracker._plain`), for sinks that take run
        rows: no ``datetime``, no id, no record here. Made for every run on the hub's thread,
        so the usual case is spelled out inline."""
        forced = run.forced_status
        if final is None:
            if error is None and forced is None and run._entered is None:
                final = _SUCCEEDED
            else:
                final = self._exit_hooks(run, None, error)
                forced = run.forced_status
        if run.key is not None:
            self._by_key.pop(run.key, None)
        scheduled_at = run._scheduled_at
        scheduled: float | datetime | None = None
        if scheduled_at is not None:
            epoch = _fixed_epoch(scheduled_at.tzinfo)
            if epoch is None:
                seconds = scheduled_at.timestamp()
            else:  # a fixed offset (UTC): the difference needs no time zone lookup
                seconds = (scheduled_at - epoch).total_seconds()
            if run.origin is _SCHEDULED:
                self._note_fired(run.job_id, seconds)
            if -EXACT_SECONDS < seconds < EXACT_SECONDS:
                scheduled = seconds
            else:
                # In UTC (a builtin timezone: its tzinfo may have been a class the writer
                # process cannot unpickle). A time past year 9999 there (or before year 1) fails
                # here, for this run alone (counted, as with a record), not in every sink's batch.
                scheduled = scheduled_at.astimezone(UTC)
        etype = emessage = etb = None
        if error is not None:
            etype, emessage, etb = self._error_details(error)
            if type(emessage) is not str:  # (an exception's __str__ gave a str subclass)
                emessage = plain_value(emessage)
        # Builtins only: the writer process cannot unpickle the service's own classes (a job id
        # that is an enum.StrEnum member defined in its __main__).
        job_id, job_name = run.job_id, run.job_name
        if type(job_id) is not str:
            job_id = plain_value(job_id)
        if type(job_name) is not str:
            job_name = plain_value(job_name)
        trace_id = span_id = None
        if run._ids:
            trace_id, span_id = run.trace_id, run.span_id
        tags = run.tags
        return (
            # The watchdog names a run it timed out by its id: made now if it is not yet.
            run._run_id if forced is None else run.run_id,
            job_id,
            job_name,
            final._value_,
            scheduled,
            run._wall0,
            duration,
            etype,
            emessage,
            etb,
            run.instance,
            run.origin._value_,
            trace_id,
            span_id,
            dict(tags) if tags else None,
        )

    def _error_details(self, error: BaseException) -> tuple[str, str, str | None]:
        """``error``'s qualified type, message and bounded traceback, for its record."""
        try:
            return describe(error)
        except Exception as exc:  # describe() does not raise; whatever did must not spread
            self.report_error("hub", exc)
            return type(error).__name__, UNPRINTABLE, None

    def _note_fired(self, job_id: str, scheduled: float) -> None:
        """``scheduled`` (seconds since 1970: instants compare right in any zone, a repeated
        hour's too) is a fire time whose run ended."""
        fired = self._fired
        previous = fired.get(job_id)
        if previous is None:
            if len(fired) >= _FIRED_KEPT:  # one-shot jobs by the thousand: start afresh
                fired.clear()
            fired[job_id] = scheduled
        elif scheduled > previous:
            fired[job_id] = scheduled

    def latest_fire_time(self, job_id: str) -> datetime | None:
        """The latest fire time of ``job_id`` (UTC) whose scheduled run has started: one in
        progress now, or one that ended (remembered for the last 10,000 jobs that ran).

        The integration asks too when a job replaced by one recorded from events announces the
        end of a run: the job it replaced may have recorded that run from inside.

        The watchdog asks before it calls a fire time missed: a scheduler blocked in a job
        store may have started the run and not yet announced its submission."""
        seconds = self._fired.get(job_id)
        latest = None if seconds is None else datetime.fromtimestamp(seconds, UTC)
        for run in [*self._live, *self._finished]:  # in progress, or ended and not yet recorded
            if run.job_id == job_id and run.origin is Origin.SCHEDULED:
                scheduled = run._scheduled_at
                if scheduled is not None and (latest is None or scheduled > latest):
                    latest = scheduled
        return None if latest is None else latest.astimezone(UTC)

    def record(self, execution: Execution) -> None:
        """Publish a record that has no run in progress behind it (``missed``, ``skipped``)."""
        if not execution.instance:
            execution = execution.evolve(instance=self.instance)
        self._publish(execution)

    @property
    def wants_jobs(self) -> bool:
        """Whether any sink receives :class:`JobState` changes (else they need not be built)."""
        return bool(self._job_workers)

    def job_changed(self, state: JobState) -> None:
        """Publish what changed about a job (added, modified, paused, removed...).

        Only sinks whose ``handles_jobs`` is true (the default) receive it.
        """
        for worker in self._job_workers:
            worker.put(state)

    def live_runs(self) -> list[Run]:
        """Runs in progress right now, oldest first."""
        return list(self._live)

    def is_live(self, run: Run) -> bool:
        """Whether ``run`` is still in progress (it has not ended, nor been closed)."""
        return run in self._live

    # -- runs known only from scheduler events (any order) -------------------------

    def event_started(
        self,
        key: Hashable,
        *,
        job_id: str,
        job_name: str,
        scheduled_at: datetime,
        tags: Mapping[str, str] | None = None,
        origin: Origin = Origin.SCHEDULED,
    ) -> None:
        """A run was submitted (start known only approximately). Ignored if it already ended."""
        with self._lock:
            if key in self._by_key or key in self._tombstones:
                self._tombstones.pop(key, None)
                return
        self._open_from_event(key, job_id, job_name, scheduled_at, tags, origin)

    def _open_from_event(
        self,
        key: Hashable,
        job_id: str,
        job_name: str,
        scheduled_at: datetime,
        tags: Mapping[str, str] | None,
        origin: Origin,
    ) -> Run:
        # No hooks: the run is not on this thread (it is known from the scheduler's events).
        run = self.open_run(
            job_id=job_id,
            job_name=job_name,
            scheduled_at=scheduled_at,
            key=key,
            tags=tags,
            hooks=False,
            origin=origin,
        )
        for hook in self._hooks:  # ids its record must carry (a span built after it ends)
            name_ids = getattr(hook, "name_event_run", None)
            if name_ids is not None:
                try:
                    name_ids(run)
                except Exception as exc:
                    self.report_error(hook.name, exc)
        return run

    def event_missed(self, key: Hashable, record: Execution, *, recorded: bool = False) -> None:
        """The fire time ``key`` stands for was missed (it passed its grace time before its run
        began), and ``record`` says so; ``recorded``: a record of it was published already.
        The integration announces its submission as well, from another thread, before or after:
        a run opened from that did not take place. ``record`` takes its place, under its run
        id, so that a ``running`` row published for it is replaced (only then, if ``recorded``).
        A submission still to come is ignored."""
        with self._lock:
            run = self._by_key.pop(key, None)
            if run is None:
                self._tombstones[key] = None
                if len(self._tombstones) > _TOMBSTONES:
                    self._tombstones.popitem(last=False)
            elif self._live.pop(run, None) is None:
                run = None  # closed meanwhile (shutdown): its record is out already
            else:
                run.ended = True
        if run is not None:
            if recorded and not run.announced:
                return
            record = record._replace(run_id=run.run_id)
        elif recorded:
            return
        self.record(record)

    def has_event_run(self, key: Hashable) -> bool:
        """Whether a run opened by :meth:`event_started` under ``key`` is in progress."""
        return key in self._by_key

    def event_finished(
        self,
        key: Hashable,
        *,
        job_id: str,
        job_name: str,
        scheduled_at: datetime,
        error: BaseException | None = None,
        traceback: str | None = None,
        tags: Mapping[str, str] | None = None,
        origin: Origin = Origin.SCHEDULED,
    ) -> None:
        """A run ended. If its start was not seen yet, it is recorded now and the start ignored."""
        with self._lock:
            run = self._by_key.get(key)
            if run is None:
                self._tombstones[key] = None
                if len(self._tombstones) > _TOMBSTONES:
                    self._tombstones.popitem(last=False)
        if run is None:
            run = self._open_from_event(key, job_id, job_name, scheduled_at, tags, origin)
        # The exception's own traceback when it has one (APScheduler's text has the frames
        # only: no exception line, no chained causes), bounded either way.
        details = describe(error, traceback) if error is not None else None
        self.close_run(run, error=error, error_details=details)

    # -- health, flush, close ------------------------------------------------------

    def stats(self) -> HubStats:
        pending = 0
        for worker in self._workers:
            pending += worker.pending + int(getattr(worker.sink, "pending", 0))
        pending += len(self._finished)
        return HubStats(
            pending=pending,
            dropped=dict(self._dropped),
            sink_errors=dict(self._errors),
            live_runs=len(self._live),
        )

    def flush(self, timeout: float = 5.0) -> bool:
        """Publish every finished run, and every live run as ``running``, then wait until
        every sink has handled and flushed what was published so far."""
        if self._fork_of is not None:  # inherited through fork(): nothing is recorded here
            return False
        deadline = time.monotonic() + timeout
        self.announce(0.0)
        ok = True
        for worker in self._workers:
            remaining = max(0.0, deadline - time.monotonic())
            ok = worker.flush(remaining) and ok
        return ok

    def close(self, timeout: float = 10.0) -> None:
        """Record runs still in progress as ``interrupted``, flush every sink and stop."""
        if self._closed:
            return
        self._stop.set()
        self._thread.join(max(0.1, timeout / 4))
        self._drain()
        for run in self.live_runs():
            self.close_run(run, status=Status.INTERRUPTED)
        self._closed = True
        self._drain()  # runs that finished while the live ones were being closed
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.stop(max(0.1, deadline - time.monotonic()))

    def announce(self, after: float | None = None) -> int:
        """Publish the runs that finished, then, as ``running``, every live run in progress
        for ``after`` seconds or more (default ``announce_after``) that was not published
        yet. Returns how many were announced."""
        after = self.announce_after if after is None else after
        with self._draining:
            self._drain_locked()
            count = 0
            with self._lock:
                now = _perf_counter()
                for run in list(self._live):
                    if not run.announced and now - run._t0 >= after:
                        run.announced = True
                        self._publish(run.snapshot())
                        count += 1
        return count

    def _drain(self) -> None:
        with self._draining:
            self._drain_locked()

    def _drain_locked(self) -> None:
        """Publish the records of the runs :meth:`finish` had queued when this started (runs
        ending meanwhile wait for the next round), in batches of at most :data:`_BATCH`.

        Under ``_draining``, so only one thread takes runs at a time. Records are built outside
        ``_lock`` (the event path's ``close_run`` must not wait for a batch) and published
        under it: a run announced as ``running`` was still live when the announcer looked, so
        its final record, queued after that, is published after.

        Bounded, so that under a stream of runs the sinks get batches as they are built
        instead of one batch when the stream pauses (``bench/ingest.py``: the writer sat idle
        for seconds while the hub's thread built 100,000 records)."""
        finished = self._finished
        popleft = finished.popleft
        build = self._final_run_row if self._run_rows else self._final_record
        remaining = len(finished)
        while remaining:
            size = min(remaining, _BATCH)
            remaining -= size
            records: list[TrackerEvent] = []
            for _ in range(size):
                run = popleft()
                # Taken off the run: run -> error -> traceback -> the job's frame -> run.
                error = run.error
                if error is not None:
                    run.error = None
                try:
                    records.append(build(run, run.final, error, run.duration))
                except Exception as exc:  # one broken run must not stop the others
                    self.report_error("hub", exc)
            with self._lock:
                self._publish_many(records)

    def _publish_many(self, records: list[TrackerEvent]) -> None:
        if records:
            for worker in self._workers:
                worker.put_many(records)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self._finished or self._live:
                try:
                    self.announce()
                except Exception as exc:  # keep going whatever happens
                    self.report_error("hub", exc)

    def report_error(self, sink: str, exc: BaseException) -> None:
        """Count an exception raised by a sink or hook; log it (at most once a minute per sink)."""
        self._errors[sink] = self._errors.get(sink, 0) + 1
        now = time.monotonic()
        if now - self._last_log.get(sink, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[sink] = now
            logger.error(
                "tracker sink %r failed (%d errors so far); the job is not affected",
                sink,
                self._errors[sink],
                exc_info=exc,
            )

    def count_drop(self, sink: str, count: int) -> None:
        """Count records dropped by ``sink`` and log it (at most once a minute per sink)."""
        self._dropped[sink] = self._dropped.get(sink, 0) + count
        now = time.monotonic()
        key = f"drop:{sink}"
        if now - self._last_log.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[key] = now
            logger.error(
                "tracker sink %r dropped records: its buffer is full (%d dropped so far)",
                sink,
                self._dropped[sink],
            )

    def _publish(self, event: TrackerEvent) -> None:
        for worker in self._workers:
            worker.put(event)


if hasattr(os, "register_at_fork"):  # (not on Windows, which has no fork())
    os.register_at_fork(after_in_child=_after_fork_in_child)
