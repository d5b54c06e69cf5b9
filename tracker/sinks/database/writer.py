"""The database sink: batched, merged, retried writes of run records.

Records arrive in batches on the sink's own thread. They are merged by run id
(a run that starts and finishes between two writes is written once, in its final
state) and written with one upsert per batch; an older ``running`` state never
overwrites a finished one. While the database is down or locked, records wait in a
bounded buffer and are retried with exponential backoff; past the bound, new runs
are dropped and counted. The job never waits for any of it.

:meth:`DatabaseSink.close` may run on another thread than the sink's, which may be inside a
write at that moment (a silent database can hold it there for good): one lock lets a single
thread use the database at a time, and close() waits for it only until its deadline, then
spills the batch still being written together with what is pending. Every database call
close() makes runs on a daemon thread of its own, so close() returns by its deadline whatever
the database does.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, insert, literal, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from ..._ids import hostname, new_run_id
from ..._plain import RunRow
from ..._record import Execution, Status
from ..._sink import BaseSink, TrackerEvent
from . import migrate, spill
from .engine import redact
from .processes import running_since
from .rows import COLUMNS, record_of, run_row_maker, storable, tuple_maker
from .schema import executions, instances

logger = logging.getLogger("tracker.database")


class _Unwritable(Exception):
    """A record could not be made a row (a value of the wrong type)."""


_REFUSED = (DataError, IntegrityError, _Unwritable, UnicodeError)
"""What a write fails with for what is in a record (the same each time it is tried), not for
the database being away: a value the database refuses, one the row cannot be made of, or text
the driver cannot encode (a lone surrogate, from an undecodable file name in an error)."""


Pending = Execution | RunRow
"""What waits to be written: a record, or a finished run's run row (``tracker._plain``) with its
id (given one as it arrives, kept for every retry)."""


class DatabaseSink(BaseSink):
    """Writes every record to ``job_executions``; keeps this instance's heartbeat."""

    name = "database"
    handles_jobs = False
    run_rows = True
    """Finished runs may come as run rows: their parameters are made without a record."""
    handles_after_close = True
    """Once closed, :meth:`handle` spills what it is given (on any thread, without the
    database): the sink's worker hands it what its stuck thread could not."""

    def __init__(
        self,
        engine: Engine,
        *,
        instance: str,
        buffer_size: int = 100_000,
        auto_migrate: bool = True,
        heartbeat_interval: float = 10.0,
        stale_after: float = 60.0,
        on_drop: Callable[[str, int], None] | None = None,
        max_backoff: float = 5.0,
        spill_dir: Path | None = None,
        pid: int | None = None,
    ) -> None:
        self.engine = engine
        self.pid = os.getpid() if pid is None else pid
        """The process whose runs these are (its death makes their ``running`` rows
        ``interrupted``): this one, or the service of a writer process."""
        self.instance = instance
        self.buffer_size = buffer_size
        self.auto_migrate = auto_migrate
        self.heartbeat_interval = heartbeat_interval
        self.stale_after = stale_after
        self.max_backoff = max_backoff
        self.spill_dir = spill_dir if spill_dir is not None else spill.default_spill_dir()
        self._spilled_files: list[Path] = []
        self._on_drop = on_drop
        self._pending: dict[str, Pending] = {}
        self._inflight: dict[str, Pending] = {}
        """The batch being written (taken from ``_pending``): spilled if close() can't wait."""
        self._spilled: dict[str, Pending] = {}
        """What close() spilled, the spill file's content: records handed over later join it."""
        self._spill_tag = spill.spill_tag()
        self._journal: dict[str, Pending] = {}
        """What this writer added to its spill file during the outage in course (by run id), so
        that a hard kill then loses at most :data:`_JOURNAL_EVERY_S` of records."""
        self._next_journal = 0.0
        self._journal_failed = False
        self._lock = threading.Lock()
        """Guards ``_pending``, ``_inflight``, ``_spilled`` and the closing state."""
        self._io = threading.Lock()
        """Held by whoever uses the database: the sink's thread, or close()'s."""
        self._closing = False  # close() started: the sink's thread writes nothing more
        self._closed = False  # close() gave up or finished: what is left is spilled
        self._ready = False
        self._earlier: tuple[int, datetime] | None = None
        """An earlier process under this instance id (a fixed one), gone: its pid and when it
        was last seen, until its runs left ``running`` are closed as interrupted."""
        self._failures = 0
        self._retry_at = 0.0
        self._next_heartbeat = 0.0
        self.last_error: str | None = None
        self.last_write_at: datetime | None = None
        self.written = 0
        self._dialect = engine.dialect.name
        self._make_row = tuple_maker(self._dialect)
        self._make_run_row = run_row_maker(self._dialect)
        self._upsert = upsert_statement(self._dialect)
        self._copy = self._dialect == "postgresql" and engine.dialect.driver == "psycopg"
        self._url = redact(engine.url.render_as_string(hide_password=False))
        self._spill_key = engine.url.render_as_string(hide_password=True)
        self._try(self._prepare)

    # -- state ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records waiting to be written."""
        return len(self._pending)

    @property
    def healthy(self) -> bool:
        """Whether the last attempt to use the database succeeded."""
        return self._ready and self._failures == 0

    # -- sink protocol -------------------------------------------------------------

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        with self._lock:
            if self._closed:  # handed over after close() (its thread was stuck): spill them
                late: dict[str, Pending] = {}
                _merge(late, events)
                self._spill_locked(late)
                return
            dropped = _merge(self._pending, events, self.buffer_size)
        if dropped:
            if self._on_drop is not None:
                self._on_drop(self.name, dropped)
            else:
                logger.error("tracker database buffer full: dropped %d records", dropped)
        self._write_if_due()

    def tick(self) -> None:
        self._write_if_due()
        self._journal_if_due()
        if not self._ready or self._closing or time.monotonic() < self._next_heartbeat:
            return
        if self._io.acquire(blocking=False):  # (else close() has the database)
            try:
                if not self._closing:
                    self._try(self._heartbeat)
            finally:
                self._io.release()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if self._closing or not self._io.acquire(timeout=max(0.0, timeout)):
            return False
        try:
            return self._flush_until(deadline)
        finally:
            self._io.release()

    def _flush_until(self, deadline: float) -> bool:
        """Write until nothing is pending (``True``) or ``deadline`` (``False``); with ``_io``."""
        while True:
            if self._closed:
                return False
            if not self._ready:
                self._try(self._prepare)
            if self._ready and self._pending:
                self._try(self._write)
            if not self._pending and self._ready:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, max(0.05, self._retry_at - time.monotonic())))

    def close(self, timeout: float) -> None:
        """Write what is pending and mark this instance stopped, within ``timeout``; spill
        what could not be written by then (with the batch the sink's thread may still be
        writing). Returns by the deadline even when a database call never returns: those
        are made on a daemon thread, left behind."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closing:
                return
            self._closing = True
        done = threading.Event()

        def finish() -> None:
            try:
                # Waits for a write the sink's thread is in, if any, until the deadline.
                if not self._io.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    return
                try:
                    if self._flush_until(deadline) and not self._closed:
                        self._try(self._mark_stopped)
                finally:
                    self._io.release()
            finally:
                done.set()

        threading.Thread(target=finish, name="tracker-database-close", daemon=True).start()
        done.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closed = True  # from now on nothing is written, nothing put back
            left = dict(self._inflight)
            _merge(left, self._pending.values())  # the newer states win, finished first
            self._pending = {}
            if left:
                self._spill_locked(left)
        self.engine.dispose()

    def _spill_locked(self, records: dict[str, Pending]) -> None:
        """Add ``records`` to the spill file (written again whole); under ``_lock``, closed.
        Records that cannot be kept there are dropped: counted and logged."""
        merged = dict(self._spilled)
        _merge(merged, records.values())
        new = sum(1 for run_id, r in merged.items() if self._spilled.get(run_id) is not r)
        if not new:
            return
        reason = self.last_error or "no answer from the database in time"
        try:
            path = spill.spill(
                self.spill_dir,
                self._spill_key,
                self.instance,
                spillable(merged.values()),
                self._spill_tag,
            )
        except OSError as exc:
            logger.error(
                "tracker could not write %d records to %s before shutdown (%s), "
                "nor spill them to %s: %s; dropped",
                new,
                self._url,
                reason,
                self.spill_dir,
                exc,
            )
            if self._on_drop is not None:
                self._on_drop(self.name, new)
            return
        self._spilled = merged
        logger.warning(
            "tracker could not write %d records to %s before shutdown (%s); kept in %s "
            "until a tracker on this database starts again",
            new,
            self._url,
            reason,
            path,
        )

    def _journal_if_due(self) -> None:
        if not self._failures or self._closing or time.monotonic() < self._next_journal:
            return
        if not self._io.acquire(blocking=False):  # close() has the database
            return
        try:
            self._add_to_journal()
        finally:
            self._io.release()

    def _add_to_journal(self) -> None:
        """While the database cannot be written, add what waits (and is not there yet) to this
        writer's spill file, at most every :data:`_JOURNAL_EVERY_S`: the records live in memory
        only till then, and a hard kill of the service would lose every one of them, however
        long the outage. The next tracker on the database loads the file like any spill file;
        it is deleted once what it holds is written. With ``_io``."""
        self._next_journal = time.monotonic() + _JOURNAL_EVERY_S
        with self._lock:
            if self._closing:
                return
            journal = self._journal
            new = [(k, v) for k, v in self._pending.items() if journal.get(k) is not v]
        if not new:
            return
        try:
            spill.append(
                self.spill_dir,
                self._spill_key,
                self.instance,
                spillable(v for _, v in new),
                self._spill_tag,
            )
        except OSError as exc:
            if not self._journal_failed:  # (once an outage: it is tried every second)
                self._journal_failed = True
                logger.error(
                    "tracker could not keep the %d records waiting for %s in %s meanwhile "
                    "(a hard kill would lose them): %s",
                    len(new),
                    self._url,
                    self.spill_dir,
                    exc,
                )
            return
        for run_id, value in new:
            journal[run_id] = value

    def _drop_journal(self) -> None:
        """What the spill file held of the outage is written: the file goes. With ``_lock``."""
        self._journal = {}
        self._journal_failed = False
        path = spill.spill_path(self.spill_dir, self._spill_key, self.instance, self._spill_tag)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            logger.error("tracker could not delete its spill file %s: %s", path, exc)

    # -- writing -------------------------------------------------------------------

    def _write_if_due(self) -> None:
        if self._closing or not self._pending or time.monotonic() < self._retry_at:
            return
        if not self._io.acquire(blocking=False):  # close() has the database
            return
        try:
            if self._closing:
                return
            if not self._ready and not self._try(self._prepare):
                return
            self._try(self._write)
        finally:
            self._io.release()

    def _write(self) -> None:
        with self._lock:
            if self._closed:  # close() spilled what was pending
                return
            batch = self._pending
            self._pending = {}
            self._inflight = batch
        refused = 0
        try:
            try:
                self._insert(self._rows(batch.values()))
            except _REFUSED:
                refused = self._write_isolating(list(batch.values()))
        except BaseException:
            with self._lock:
                self._inflight = {}
                if not self._closed:  # (else close() spilled the batch)
                    # Put the batch back, keeping anything newer that arrived meanwhile. (Rows
                    # written before the failure are written again: the upsert leaves them.)
                    batch.update(self._pending)
                    self._pending = batch
            raise
        with self._lock:
            self._inflight = {}
            self.written += len(batch) - refused
            self.last_write_at = datetime.now(UTC)
            # Each record the outage journal holds was in this batch (or an earlier state of
            # one): the file can go. (Unless close() gave up on the batch meanwhile: the file is
            # its spill now, with what is still pending.)
            if (self._journal or self._journal_failed) and not self._closed:
                self._drop_journal()
            # Their records were in this batch: durable now. (Unless close() gave up on the
            # batch meanwhile: its spill file, maybe one of these, holds what is pending too.)
            if self._spilled_files and not self._closed:
                for path in self._spilled_files:
                    path.unlink(missing_ok=True)
                self._spilled_files = []

    def _rows(self, records: Iterable[Pending], *, storable_first: bool = False) -> list[Any]:
        make, make_run = self._make_row, self._make_run_row
        try:
            if storable_first:
                return [make(storable(record_of(e))) for e in records]
            return [make_run(e) if type(e) is tuple else make(e) for e in records]  # type: ignore[arg-type]
        except (TypeError, ValueError, ArithmeticError) as exc:  # (a time out of range)
            raise _Unwritable(f"{type(exc).__name__}: {exc}") from exc

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self.engine.begin() as conn:
            if self._dialect == "sqlite":
                _write_sqlite(conn, rows)
            elif self._copy:
                _write_postgresql_copy(conn, rows)
            else:
                conn.exec_driver_sql(self._upsert, rows)  # executemany

    def _write_isolating(self, records: list[Pending]) -> int:
        """The database refused a batch for what is in it (a data or integrity error, not an
        outage; or a record could not be made a row): one bad record must not hold back the
        others, retried forever. Halves are written until the records refused are alone; each
        is written again made :func:`~tracker.sinks.database.rows.storable` (NUL characters
        replaced, text cut to its column), and dropped — counted and logged — if it is still
        refused. Returns how many were dropped."""
        refused: list[tuple[Pending, BaseException]] = []
        parts = [records]
        while parts:
            part = parts.pop()
            if len(part) > 1:
                middle = len(part) // 2
                for half in (part[middle:], part[:middle]):
                    try:
                        self._insert(self._rows(half))
                    except _REFUSED:
                        parts.append(half)
                continue
            (record,) = part
            try:
                self._insert(self._rows([record], storable_first=True))
            except _REFUSED as exc:
                refused.append((record, exc))
        if refused:
            first, error = refused[0]  # (a record or a run row: both begin with these two)
            run_id, job_id = first[0], first[1]
            reason = error.orig if isinstance(error, DBAPIError) else error.__cause__ or error
            logger.error(
                "tracker database %s refused %d record(s), dropped; the first: run %s of job %r "
                "(%s: %s)",
                self._url,
                len(refused),
                run_id,
                job_id,
                type(reason).__name__,
                (str(reason).splitlines() or [""])[0],
            )
            if self._on_drop is not None:
                self._on_drop(self.name, len(refused))
        return len(refused)

    def _try(self, fn: Callable[[], None]) -> bool:
        try:
            fn()
        except (SQLAlchemyError, OSError) as exc:
            self._failures += 1
            delay = min(self.max_backoff, 0.05 * 2 ** min(self._failures, 10))
            self._retry_at = time.monotonic() + delay * random.uniform(0.5, 1.0)
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if self._failures == 1 or self.last_error != message:
                logger.warning(
                    "tracker cannot write to %s (%s); %d records kept, retrying",
                    self._url,
                    message,
                    len(self._pending),
                )
            self.last_error = message
            return False
        if self._failures:
            logger.info("tracker database %s is back; writing resumed", self._url)
        self._failures = 0
        self._retry_at = 0.0
        return True

    # -- instances: heartbeat, and closing the runs of dead ones --------------------

    def _prepare(self) -> None:
        if self.auto_migrate:
            migrate.upgrade(self.engine)
        now = datetime.now(UTC)
        host = host_key()
        with self.engine.begin() as conn:
            known = conn.execute(
                select(
                    instances.c.hostname,
                    instances.c.pid,
                    instances.c.started_at,
                    instances.c.heartbeat_at,
                    instances.c.stopped_at,
                ).where(instances.c.instance == self.instance)
            ).first()
            if known is None:
                conn.execute(
                    insert(instances).values(
                        instance=self.instance,
                        hostname=host,
                        pid=self.pid,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
            elif (known.hostname, known.pid) == (host, self.pid):
                # This process's writer starting again (the writer process, restarted).
                conn.execute(
                    update(instances)
                    .where(instances.c.instance == self.instance)
                    .values(heartbeat_at=now, stopped_at=None)
                )
            else:  # another process had this id: this one takes it over
                if known.stopped_at is None and not instance_dead(
                    known.hostname, known.pid, known.started_at, known.heartbeat_at, 0.0
                ):
                    logger.warning(
                        "tracker instance id %r is also used by process %s on %s, which "
                        "still runs: instance ids must be unique among live trackers",
                        self.instance,
                        known.pid,
                        known.hostname,
                    )
                else:
                    self._earlier = (known.pid, _utc(known.heartbeat_at))
                conn.execute(
                    update(instances)
                    .where(instances.c.instance == self.instance)
                    .values(
                        hostname=host,
                        pid=self.pid,
                        started_at=now,
                        heartbeat_at=now,
                        stopped_at=None,
                    )
                )
        if self._earlier is not None:
            # Before anything of this process is written (nothing is while the sink is not
            # ready: a failure here is retried with the rest, the earlier process kept in
            # mind; the instance row says this process now). A run of it that ended while the
            # database was down, spilled, is written next: its finished state replaces the
            # inferred interruption (PROCESS_DIED).
            pid, last_seen = self._earlier
            with self.engine.begin() as conn:
                closed = close_interrupted(
                    conn,
                    self.instance,
                    last_seen,
                    f"The process running this job (instance {self.instance}, process "
                    f"{pid}) stopped while it was in progress; it was last seen at "
                    f"{last_seen.isoformat()}.",
                )
            self._earlier = None
            if closed:
                logger.warning(
                    "tracker closed %d runs left running by the previous process of instance "
                    "%r as interrupted",
                    closed,
                    self.instance,
                )
        self._ready = True
        self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        if self._recover_spilled():
            self._write()
        interrupt_dead_instances(self.engine, stale_after=self.stale_after, exclude=self.instance)

    def _recover_spilled(self) -> bool:
        """Load the records spilled for this database; whether there were any."""
        records, files = spill.load(self.spill_dir, self._spill_key, mine=(self.pid,))
        if not files:
            return False
        with self._lock:
            if self._closed:  # (close() gave up meanwhile: the files stay for the next start)
                return False
            # A file may hold both a run's `running` state and its final one (files the
            # writer process's service spilled as the records came): the final one wins, in
            # any order. What is pending here is newer and wins too, unless only `running`.
            spilled: dict[str, Pending] = {}
            _merge(spilled, records)
            _merge(spilled, self._pending.values())
            self._pending = spilled
            self._spilled_files = files
        logger.info("tracker loaded %d records spilled at an earlier shutdown", len(records))
        return True

    def _heartbeat(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.instance == self.instance)
                # (stopped_at: alive after all, if another tracker took it for dead)
                .values(heartbeat_at=datetime.now(UTC), stopped_at=None)
            )
        self._next_heartbeat = time.monotonic() + self.heartbeat_interval
        interrupt_dead_instances(self.engine, stale_after=self.stale_after, exclude=self.instance)

    def _mark_stopped(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.instance == self.instance)
                .values(stopped_at=datetime.now(UTC))
            )


def spillable(pending: Iterable[Pending]) -> Iterator[Execution]:
    """The records of ``pending`` (:func:`~.rows.record_of`), leaving out, logged, one that
    cannot be made: the others must still reach the spill file."""
    for value in pending:
        try:
            yield record_of(value)
        except Exception as exc:
            logger.error("tracker could not keep a record for the spill file, dropped: %r", exc)


def _merge(
    into: dict[str, Pending], events: Iterable[TrackerEvent | Pending], bound: int | None = None
) -> int:
    """Merge the records and run rows among ``events`` into ``into`` by run id, a later state
    replacing an earlier one but a ``running`` state never replacing a finished one; a new run
    past ``bound`` records is left out. Returns how many were left out.

    A run row is a finished run's (never ``running``); one without an id is given one here, as
    the run would have made it (:attr:`~tracker._run.Run.run_id`), kept while it waits."""
    dropped = 0
    for event in events:
        if type(event) is tuple:  # a run row
            run_id = event[0]
            if run_id is None:
                run_id = new_run_id(int(event[5] * 1000))
                event = (run_id, *event[1:])
            if bound is not None and len(into) >= bound and run_id not in into:
                dropped += 1
                continue
            into[run_id] = event
            continue
        if not isinstance(event, Execution):
            continue
        previous = into.get(event.run_id)
        if previous is None:
            if bound is not None and len(into) >= bound:
                dropped += 1
                continue
            into[event.run_id] = event
        elif event.status is not Status.RUNNING or (
            isinstance(previous, Execution) and previous.status is Status.RUNNING
        ):
            into[event.run_id] = event
    return dropped


_JOURNAL_EVERY_S = 1.0
"""While the database cannot be written, how often what waits is added to the spill file."""

PROCESS_DIED = "tracker.ProcessDied"
"""The error type of runs closed as ``interrupted`` because their process was gone."""


_ON_CONFLICT = (
    "ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "run_id")
    + f" WHERE {executions.name}.status = '{Status.RUNNING.value}'"
    + f" OR ({executions.name}.status = '{Status.INTERRUPTED.value}'"
    + f" AND {executions.name}.error_type = '{PROCESS_DIED}'"
    + f" AND excluded.status <> '{Status.RUNNING.value}')"
)
"""A finished state replaces a ``running`` one, and an ``interrupted`` one that was only
inferred (its process was taken for dead: :data:`PROCESS_DIED`); a ``running`` state never
overwrites a finished one (records may be retried after a failed write), nor that inference
(the instance is marked stopped then: nothing would close the row again)."""


@functools.cache
def upsert_statement(dialect: str, rows: int = 1, nulls: tuple[int, ...] = ()) -> str:
    """``INSERT … VALUES`` (``rows`` rows) ``… ON CONFLICT (run_id) DO UPDATE … WHERE status =
    'running'`` with the driver's parameter marks; ``NULL`` written out for the columns at
    ``nulls`` (positions in :data:`COLUMNS`), which take no parameter."""
    mark = "?" if dialect == "sqlite" else "%s"
    values = f"({', '.join('NULL' if at in nulls else mark for at in range(len(COLUMNS)))})"
    return (
        f"INSERT INTO {executions.name} ({', '.join(COLUMNS)}) "
        f"VALUES {', '.join([values] * rows)} {_ON_CONFLICT}"
    )


_SQLITE_CHUNK = 512  # rows per statement: 512 x 18 parameters, under SQLite's 32,766
_MOSTLY_NULL = tuple(
    COLUMNS.index(c)
    for c in ("error_type", "error_message", "traceback", "trace_id", "span_id", "tags")
)
"""Columns most runs leave empty (no error, no span, no tags)."""
_AT_E1, _AT_E2, _AT_E3, _AT_T1, _AT_T2, _AT_T3 = _MOSTLY_NULL


@functools.cache
def _null_shape(shape: tuple[bool, ...]) -> tuple[tuple[int, ...], Callable[[Any], Any]]:
    """For rows whose :data:`_MOSTLY_NULL` columns are ``None`` where ``shape`` says: those
    columns, and a function picking the other values of such a row (as a tuple)."""
    nulls = tuple(at for at, null in zip(_MOSTLY_NULL, shape, strict=True) if null)
    kept = [at for at in range(len(COLUMNS)) if at not in nulls]
    return nulls, operator.itemgetter(*kept)


def _write_sqlite(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Upsert ``rows`` in multi-row statements of 512, 256, ... 1 rows.

    Python's sqlite3 releases the GIL around every statement step, and ``executemany``
    steps once per row: with the scheduler's threads busy, each row then costs a GIL
    hand-off. One step per 512 rows cost the jobs less than half as much
    (``bench/overhead.py``). Power-of-two sizes keep the statement cache small.

    Rows are grouped by which of the mostly empty columns they leave empty, and the statement
    of each group writes ``NULL`` there: sqlite3 binds a ``None`` parameter through its
    adaptation lookup, about 0.3 µs each with the interpreter lock held, and a run without an
    error, span or tags has six (``bench/overhead.py``; 3.4 µs a row bound, 1.0 µs without them).
    """
    groups: dict[tuple[bool, ...], list[tuple[Any, ...]]] = {}
    for row in rows:
        shape = (
            row[_AT_E1] is None,
            row[_AT_E2] is None,
            row[_AT_E3] is None,
            row[_AT_T1] is None,
            row[_AT_T2] is None,
            row[_AT_T3] is None,
        )
        group = groups.get(shape)
        if group is None:
            group = groups[shape] = []
        group.append(row)
    for empty, group in groups.items():
        nulls, pick = _null_shape(empty)
        start, total = 0, len(group)
        while start < total:
            size = _SQLITE_CHUNK
            while size > total - start:
                size //= 2
            chunk = group[start : start + size]
            params = tuple(chain.from_iterable(map(pick, chunk)))  # (12 columns or more)
            conn.exec_driver_sql(upsert_statement("sqlite", size, nulls), params)
            start += size


_STAGING = "tracker_staging_executions"
_COPY_UPSERT = (
    f"INSERT INTO {executions.name} ({', '.join(COLUMNS)}) "
    f"SELECT {', '.join(COLUMNS)} FROM {_STAGING} {_ON_CONFLICT}"
)
_COPY_TEXT = f"COPY {_STAGING} ({', '.join(COLUMNS)}) FROM STDIN"
_COPY_BINARY = f"{_COPY_TEXT} (FORMAT BINARY)"
_STAGED = "tracker_copy_types"
"""Key, in the pooled connection's ``info``, of the types its staging table's columns are
written as (the table exists once it is set); ``None`` there: text COPY."""
_BINARY_AS = {
    "text": "text",
    "character varying": "text",
    "json": "text",  # json's binary form is its text
    "timestamp with time zone": "timestamptz",
    "double precision": "float8",
    "integer": "int4",
    "bigint": "int8",
    "smallint": "int2",
}
"""Column type (``format_type``) → the type the row's value is written as in binary COPY."""


def _copy_types(cursor: Any) -> list[str] | None:
    """The binary COPY type of each column of the staging table (in :data:`COLUMNS` order), or
    ``None`` if one of them has a type binary COPY is not used for here (then: text COPY)."""
    cursor.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
        f"WHERE attrelid = 'pg_temp.{_STAGING}'::regclass AND attnum > 0 AND NOT attisdropped"
    )
    found = {name: _BINARY_AS.get(kind) for name, kind in cursor.fetchall()}
    types = [found.get(column) for column in COLUMNS]
    return None if None in types else types  # type: ignore[return-value]


def _write_postgresql_copy(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Upsert ``rows`` through ``COPY`` into a temporary table, then one ``INSERT … SELECT``.

    With psycopg's pipelined ``executemany`` the writer could not keep up with the jobs:
    ~15k durable runs/s in ``bench/ingest.py``, against 20-22k this way in the same
    conditions. ``COPY`` is binary: psycopg formats a row for text ``COPY`` in 13-16 µs
    (its timestamps, mostly), for binary in about 1 µs — on the writer's thread, which shares
    the interpreter with the jobs. The column types are read from the table once per
    connection; a type this does not know makes that connection's ``COPY`` text.

    The temporary table lives as long as the pooled connection and is emptied at each
    commit; it is created, and its types read, once per connection. Driver errors are
    wrapped as SQLAlchemy's (so an outage is retried like any other) and a broken
    connection is invalidated, never pooled again.
    """
    driver: Any = conn.connection.driver_connection
    info = conn.connection.info
    dbapi_error: Any = conn.dialect.dbapi.Error  # type: ignore[union-attr]
    try:
        with driver.cursor() as cursor:
            if _STAGED not in info:
                cursor.execute(
                    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} "
                    f"(LIKE {executions.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                types = _copy_types(cursor)
            else:
                types = info[_STAGED]
            with cursor.copy(_COPY_TEXT if types is None else _COPY_BINARY) as copy:
                if types is not None:
                    copy.set_types(types)
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
            cursor.execute(_COPY_UPSERT)
        info[_STAGED] = types
    except dbapi_error as exc:
        info.pop(_STAGED, None)  # made again, and its types read, on the next attempt
        # Straight from the driver: wrap it as SQLAlchemy would, and never give a broken
        # connection back to the pool.
        broken = bool(getattr(driver, "broken", False) or getattr(driver, "closed", False))
        if broken:
            conn.invalidate()
        raise DBAPIError.instance(
            "COPY", None, exc, dbapi_error, connection_invalidated=broken
        ) from exc


@functools.cache
def host_key() -> str:
    """What the ``instances.hostname`` column holds: the host name and, where there is one, the
    process id namespace (``/proc/self/ns/pid``). Only an instance with the same key can be
    checked by its process id here: containers sharing a host name (host networking) each have
    their own process ids."""
    try:
        namespace = f" pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        namespace = ""
    return hostname()[: 255 - len(namespace)] + namespace


_CLOCK_SLACK_S = 2.0


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def instance_dead(
    host: str, pid: int, started_at: datetime, heartbeat_at: datetime, stale_after: float
) -> bool:
    """Whether the tracker instance so recorded is gone.

    On this host (same :func:`host_key`): gone when its process is, or when the process now
    under its id started after the instance did (the id was reused); alive while it runs,
    however old its heartbeat (a database outage stops heartbeats, not the runs). Where the
    process's start can't be read, or on another host: gone when the heartbeat is older than
    ``stale_after`` seconds.
    """
    if host == host_key():
        same = running_since(pid, _utc(started_at).timestamp() + _CLOCK_SLACK_S)
        if same is not None:
            return not same
    return _utc(heartbeat_at) < datetime.now(UTC) - timedelta(seconds=stale_after)


def close_interrupted(conn: Connection, instance: str, last_seen: datetime, message: str) -> int:
    """Close ``instance``'s ``running`` rows as ``interrupted`` (its process died), ending when
    it was ``last_seen`` or, for a run that started after that, when it started (never before
    its own start); returns how many."""
    seen = literal(last_seen, executions.c.finished_at.type)
    ended = case((executions.c.started_at > seen, executions.c.started_at), else_=seen)
    result = conn.execute(
        update(executions)
        .where(and_(executions.c.status == Status.RUNNING.value, executions.c.instance == instance))
        .values(
            status=Status.INTERRUPTED.value,
            finished_at=ended,
            error_type=PROCESS_DIED,
            error_message=message,
        )
    )
    return result.rowcount or 0


def interrupt_dead_instances(
    engine: Engine, *, stale_after: float, exclude: str | None = None
) -> int:
    """Close as ``interrupted`` the ``running`` rows of instances that died.

    An instance is dead when it stopped cleanly or when :func:`instance_dead` says so (its
    process gone from this host, or, elsewhere, its heartbeat older than ``stale_after``
    seconds). Rows of live instances are untouched. Returns the number of rows closed.
    """
    now = datetime.now(UTC)
    with engine.begin() as conn:
        candidates = conn.execute(
            select(
                instances.c.instance,
                instances.c.hostname,
                instances.c.pid,
                instances.c.started_at,
                instances.c.heartbeat_at,
            ).where(instances.c.stopped_at.is_(None))
        ).all()
        dead = []
        for inst, inst_host, pid, started_at, heartbeat_at in candidates:
            if inst != exclude and instance_dead(
                inst_host, pid, started_at, heartbeat_at, stale_after
            ):
                dead.append((inst, heartbeat_at))
        closed = 0
        for inst, heartbeat_at in dead:
            closed += close_interrupted(
                conn,
                inst,
                heartbeat_at,
                f"The process running this job ({inst}) stopped while it was in progress; "
                f"it was last seen at {heartbeat_at.isoformat()}.",
            )
            conn.execute(
                update(instances)
                .where(instances.c.instance == inst)
                .values(stopped_at=heartbeat_at)
            )
        # Forget instances that stopped long ago (their rows are closed).
        conn.execute(
            instances.delete().where(
                and_(
                    instances.c.stopped_at.is_not(None),
                    instances.c.stopped_at < now - timedelta(days=7),
                )
            )
        )
    if closed:
        logger.warning(
            "tracker closed %d runs left running by dead processes as interrupted", closed
        )
    return closed
