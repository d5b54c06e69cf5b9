"""The database sink with its writer in a child process (``database_writer="process"``).

The in-process :class:`~tracker.sinks.database.DatabaseSink` turns records into rows and
binds them on a thread of the service's own process, so its work competes with the jobs
for the interpreter lock. This sink only pickles each record (about 2 µs) and pipes the
batch to a child process (:mod:`.child`) that runs the same ``DatabaseSink`` there: same
merging, batching, retries, spill and heartbeat, on the machine's other cores.

Nothing is lost when the child dies: every batch is kept here until the child reports it
durable, and a new child (started again after a second, later ones spaced out up to a
minute while none makes progress) gets what was not; a child the tracker gives up on is
killed, never told the service is gone. The kept batches are bounded by ``buffer_size``, one
record per run as in the in-process writer: when room is short, a run's final state takes
the place of its ``running`` one, and beyond the bound new ``running`` states are dropped
first, then new records (counted). When the service's process is killed, the child sees its
input close and writes what it had received before exiting.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..._exceptions import ConfigurationError
from ..._ids import new_salt
from ..._plain import AT_STATUS, from_sent, plain_row
from ..._record import Execution, Status
from ..._sink import BaseSink, TrackerEvent
from . import spill
from .engine import in_memory, normalise_url, redact
from .frames import encode, read_frame, write_all
from .rows import to_plain
from .writer import Pending, _merge, spillable

logger = logging.getLogger("tracker.database")

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from tracker.sinks.database.child import main; main()"
)
_RESTART_EVERY_S = 1.0
_MOST_PER_BATCH = 8192
"""Rows in one batch at most: a run row's id may come from its place in it (13 bits)."""
_RESTART_MAX_S = 60.0
_ANSWER_MARGIN_S = 0.5
"""Of a flush's or close's timeout, what the writer process is not given: for its answer to
arrive within the timeout (a fifth of it, when that is less)."""


_RUNNING = Status.RUNNING.value


def _count(rows: list[Any]) -> int:
    """Records in a batch (without the places of those taken out)."""
    return len(rows) - rows.count(None)


def _sendable(
    rows: list[tuple[Any, ...]],
) -> tuple[list[tuple[Any, ...]], list[tuple[tuple[Any, ...], Exception]]]:
    """``rows`` could not be pickled all together (a value of a class of the service's own):
    those that can be once their text is plain ``str``, and those that still cannot, with
    why."""
    kept: list[tuple[Any, ...]] = []
    failed: list[tuple[tuple[Any, ...], Exception]] = []
    for row in rows:
        plain = plain_row(row)
        try:
            encode(plain)
        except Exception as exc:
            failed.append((plain, exc))
        else:
            kept.append(plain)
    return kept, failed


class WriterExited(RuntimeError):
    """The writer process ended without being asked to (killed, or failed)."""


class _Child:
    """One writer process and the thread reading its answers."""

    def __init__(self, config: dict[str, Any], on_message: Callable[[tuple[Any, ...]], None]):
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, _PACKAGE_ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.fd_in = self.process.stdin.fileno()
        self.fd_out = self.process.stdout.fileno()
        self.alive = True
        self.ready = False
        """It answered its first status: it has opened the database (or tried)."""
        self._on_message = on_message
        try:
            self.send(encode(("config", config)))
        except OSError:  # it died at once: leave no process or pipe behind
            self.process.kill()
            self.process.wait()
            self.process.stdin.close()
            self.process.stdout.close()
            raise
        self.reader = threading.Thread(
            target=self._read, name="tracker-sink-database-reader", daemon=True
        )
        self.reader.start()

    def send(self, frame: bytes) -> None:
        write_all(self.fd_in, frame)

    def _read(self) -> None:
        try:
            while True:
                message = read_frame(self.fd_out)
                if message[1] == "ready":
                    self.ready = True
                self._on_message(message)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            self.alive = False
            self._on_message(("exited",))

    def stop(self, timeout: float) -> int | None:
        """Close its input and wait for the process to end (killing it after ``timeout``); its
        exit code. To the writer, its input's end means the service is gone: it writes what it
        holds, marks the instance stopped, closes the instance's runs still ``running`` as
        interrupted, and exits. So only for the service closing: a writer the service gives up
        on while it lives (or finds gone) is killed (:meth:`kill`)."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the writer's cue to write what it holds and exit
        except OSError:
            pass
        return self._end(timeout)

    def kill(self) -> int | None:
        """End the process at once, as it is; its exit code. (The service lives on: what the
        process had not made durable is sent again to the next one.)"""
        self.process.kill()
        return self._end(0.0)

    def _end(self, timeout: float) -> int | None:
        try:
            code = self.process.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.alive = False
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        if threading.current_thread() is not self.reader:
            self.reader.join(1.0)  # it ends at the end of the pipe, now that the writer exited
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


class ProcessDatabaseSink(BaseSink):
    """Writes every record to ``job_executions`` from a child process.

    Same contract as :class:`~tracker.sinks.database.DatabaseSink` (``flush()`` makes
    everything durable, ``close()`` flushes or spills, outages are retried), and the same
    health attributes, read from the child's reports.
    """

    name = "database"
    handles_jobs = False
    run_rows = True

    def __init__(
        self,
        url: str,
        *,
        instance: str,
        buffer_size: int = 100_000,
        auto_migrate: bool = True,
        heartbeat_interval: float = 10.0,
        stale_after: float = 60.0,
        on_drop: Callable[[str, int], None] | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
        max_backoff: float = 5.0,
        spill_dir: Path | None = None,
        interval: float = 0.05,
        start_timeout: float = 60.0,
    ) -> None:
        url = normalise_url(url)
        if in_memory(url):
            raise ConfigurationError(
                "database_writer='process' needs a database both processes can open: "
                f"{redact(url)} is in memory"
            )
        self.instance = instance
        self.buffer_size = buffer_size
        self.spill_dir = spill_dir if spill_dir is not None else spill.default_spill_dir()
        self._url = redact(url)
        self._spill_key = redact(url)
        self._spill_tag = spill.spill_tag()
        self._config: dict[str, Any] = {
            "url": url,
            "instance": instance,
            "buffer_size": buffer_size,
            "auto_migrate": auto_migrate,
            "heartbeat_interval": heartbeat_interval,
            "stale_after": stale_after,
            "max_backoff": max_backoff,
            "spill_dir": self.spill_dir,
            "interval": interval,
            "pid": os.getpid(),
            "salt": new_salt(),  # the ids of run rows sent without one: see from_sent()
            "log_level": logging.getLogger("tracker").getEffectiveLevel(),
        }
        self._on_drop = on_drop
        self._on_error = on_error
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._unacked: collections.deque[tuple[int, list[Any]]] = collections.deque()
        """The batches sent and not yet durable, by sequence number: their rows (a ``None``
        where a row was taken out, superseded: see _make_room)."""
        self._unacked_count = 0
        self._seq = 0
        self._acked = 0  # every batch up to this one is durable
        self._running_at: dict[str, tuple[int, list[Any], int]] = {}
        """Where the ``running`` rows of the waiting batches are (batch, list, place), as far as
        _make_room looked (up to batch ``_looked_to``)."""
        self._looked_to = 0
        self._tokens = itertools.count(1)
        self._replies: dict[object, bool | None] = {}
        self._waiting: set[object] = set()  # the tokens _ask() waits for the answer to
        self._stats: dict[str, Any] = {
            "healthy": False,
            "last_error": None,
            "last_write_at": None,
            "written": 0,
        }
        self._written_before = 0  # by children that exited
        self._next_start = 0.0
        self._failed_starts = 0
        self._closing = False
        self.restarts = 0
        """Times the writer process had to be started again."""
        self.answer_within = 10.0
        """Seconds of silence (it reports every second) after which the writer process is
        reported unhealthy: stuck in a database call, or stopped."""
        self._last_report = time.monotonic()
        self._child: _Child | None = None
        child = self._start()
        if child is None:
            raise ConfigurationError(str(self._stats["last_error"]))
        deadline = time.monotonic() + start_timeout
        with self._cond:
            while not child.ready and child.alive:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        if not child.ready:
            self._child = None
            if child.alive:  # (killed: it must not take its input's end for the service's)
                child.kill()
                raise ConfigurationError(
                    f"the database writer process did not start within {start_timeout:g} s"
                )
            code = child.kill()  # (it exited: this only reaps it)
            raise ConfigurationError(
                f"the database writer process exited at start (exit code {code}): its output "
                "is on standard error"
            )

    # -- state ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records not yet durable (kept here until the writer process reports them)."""
        return self._unacked_count

    @property
    def healthy(self) -> bool:
        """Whether the writer process runs, answers, and its last use of the database
        succeeded."""
        child = self._child
        return (
            child is not None
            and child.alive
            and child.ready
            and bool(self._stats["healthy"])
            and self._silent_for() < self.answer_within
        )

    @property
    def last_error(self) -> str | None:
        silent = self._silent_for()
        if silent >= self.answer_within:
            return f"the writer process has not answered for {silent:.0f} s"
        error: str | None = self._stats["last_error"]
        return error

    def _silent_for(self) -> float:
        return time.monotonic() - self._last_report

    @property
    def last_write_at(self) -> datetime | None:
        when: datetime | None = self._stats["last_write_at"]
        return when

    @property
    def written(self) -> int:
        """Rows written (by every writer process this sink started)."""
        return self._written_before + int(self._stats["written"])

    @property
    def pid(self) -> int | None:
        """The writer process's id (``None`` while it is not running)."""
        child = self._child
        return child.process.pid if child is not None and child.alive else None

    # -- the child -----------------------------------------------------------------

    def _start(self) -> _Child | None:
        """Start a writer process and send it what is not durable yet (it reads that once it
        is ready: nothing waits for that here, and nothing gives up on it).

        Starts are spaced out while no batch becomes durable in between (a writer that
        keeps failing): 1 s, 2 s, 4 s... up to a minute."""
        delay = min(_RESTART_MAX_S, _RESTART_EVERY_S * 2**self._failed_starts)
        self._next_start = time.monotonic() + delay
        self._failed_starts += 1
        try:
            child = _Child(self._config, self._on_message)
        except OSError as exc:
            self._stats["last_error"] = f"cannot start the database writer process: {exc}"
            logger.error("tracker %s", self._stats["last_error"])
            return None
        self._child = child
        try:
            for seq, rows in list(self._unacked):  # a new child gets what the last one lost
                child.send(encode(("records", seq, rows)))
        except OSError:  # it died: the next call reaps it, and starts another in time
            child.alive = False
        return child

    def _ensure_child(self) -> _Child | None:
        child = self._child
        if child is not None and child.alive:
            return child
        if self._closing or time.monotonic() < self._next_start:
            return None
        # (Gone: a broken pipe or the end of its output. Killed all the same, never sent the
        # end of its input: to a writer, that is the service dying.)
        if child is not None and not child.ready:  # it never started: not a restart
            code = child.kill()
            self._child = None
            self._stats["last_error"] = f"the writer process exited at start (exit code {code})"
            logger.error("tracker %s; its output is above", self._stats["last_error"])
        elif child is not None:
            code = child.kill()
            self._child = None
            self._written_before += int(self._stats["written"])
            self._stats["written"] = 0
            self.restarts += 1
            self._stats["last_error"] = f"the writer process exited (exit code {code})"
            logger.error(
                "tracker database writer process exited (exit code %s); starting another, "
                "%d records to send again",
                code,
                self._unacked_count,
            )
            if self._on_error is not None:  # counted as the sink's error (its metric, stats)
                self._on_error(self.name, WriterExited(self._stats["last_error"]))
        return self._start()

    def _on_message(self, message: tuple[Any, ...]) -> None:
        if message[0] == "exited":
            with self._cond:
                self._cond.notify_all()
            return
        _, token, ok, acked, stats, dropped = message
        if dropped and self._on_drop is not None:
            self._on_drop(self.name, dropped)
        with self._cond:
            self._stats = stats
            self._last_report = time.monotonic()
            unacked = self._unacked
            while unacked and unacked[0][0] <= acked:
                self._unacked_count -= _count(unacked.popleft()[1])
                self._failed_starts = 0  # progress: a writer that keeps dying does not
            self._acked = max(self._acked, acked)
            if not unacked:
                self._running_at.clear()
            if token == "ready":
                if not unacked:
                    self._failed_starts = 0  # ready, and nothing resent that could make it fail
                self._cond.notify_all()
            elif token is not None and token in self._waiting:
                self._replies[token] = ok
                self._cond.notify_all()

    def _send(self, frame: bytes, wait: float | None = None) -> bool:
        """Send ``frame`` to the writer process; ``False`` if it is not running, or if
        another send is stuck for ``wait`` seconds (a writer that stopped reading)."""
        if not self._send_lock.acquire(timeout=-1 if wait is None else wait):
            return False
        try:
            child = self._ensure_child()
            if child is None:
                return False
            try:
                child.send(frame)
            except OSError:  # it died: the next call starts another, which gets the rest
                child.alive = False
                return False
        finally:
            self._send_lock.release()
        return True

    def _ask(self, kind: str, timeout: float) -> bool | None:
        """Send ``kind`` (flush, close) and wait for its answer, ``timeout`` at most; ``None``
        if none came by then. The writer process is given a little less, for its answer to
        arrive in time."""
        deadline = time.monotonic() + timeout
        token = next(self._tokens)
        margin = min(_ANSWER_MARGIN_S, timeout / 5)
        with self._cond:
            self._waiting.add(token)
        try:
            if not self._send(encode((kind, token, max(0.0, timeout - margin))), wait=timeout):
                return None
            with self._cond:
                while token not in self._replies:
                    child = self._child
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or child is None or not child.alive:
                        return None
                    self._cond.wait(min(remaining, 0.5))
                return self._replies.pop(token)
        finally:
            with self._cond:
                self._waiting.discard(token)
                self._replies.pop(token, None)

    # -- sink protocol -------------------------------------------------------------

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        # Run rows as the hub made them (only a plain ``tuple``: every event is a tuple).
        rows = [
            to_plain(e) if isinstance(e, Execution) else e
            for e in events
            if type(e) is tuple or isinstance(e, Execution)
        ]
        if not rows:
            return
        if self.buffer_size - self._unacked_count < len(rows):
            rows = self._make_room(rows)
            if not rows:
                return
        for start in range(0, len(rows), _MOST_PER_BATCH):
            self._send_batch(rows[start : start + _MOST_PER_BATCH])

    def _make_room(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """``rows`` do not all fit in ``buffer_size`` beside the batches not yet durable (the
        database is away): keep one record per run, as the in-process writer does. A run's
        final state supersedes its ``running`` one, which is taken out, from the waiting
        batches too (they are sent again in order: the final state still comes after it).
        If still short of room, new ``running`` states are dropped before any final one, then
        the newest. Returns the rows to send; the dropped are counted."""
        finished = {row[0] for row in rows if row[AT_STATUS] != _RUNNING}
        rows = [row for row in rows if row[AT_STATUS] != _RUNNING or row[0] not in finished]
        with self._cond:
            # The batches that came since the last call (only those: a full buffer is met
            # again at every batch while the database is away).
            running_at = self._running_at
            for seq, batch in reversed(self._unacked):
                if seq <= self._looked_to:
                    break
                for i, row in enumerate(batch):
                    if row is None:
                        continue
                    if row[AT_STATUS] == _RUNNING:
                        running_at[row[0]] = (seq, batch, i)
                    else:
                        finished.add(row[0])
            self._looked_to = self._seq
            taken = 0
            for run_id in finished:
                at = running_at.pop(run_id, None)
                if at is not None and at[0] > self._acked:  # (else written, or spilled)
                    _, batch, i = at
                    batch[i] = None  # (in its place: the others keep theirs, and their ids)
                    taken += 1
            self._unacked_count -= taken
            room = max(0, self.buffer_size - self._unacked_count)
        dropped = len(rows) - room
        if dropped > 0:
            running = [i for i, row in enumerate(rows) if row[AT_STATUS] == _RUNNING]
            out = set(running[len(running) - dropped :])  # the newest `running` states first
            if len(out) < dropped:  # then the newest final states
                final = [i for i in range(len(rows)) if i not in out]
                out.update(final[len(final) - (dropped - len(out)) :])
            rows = [row for i, row in enumerate(rows) if i not in out]
            if self._on_drop is not None:
                self._on_drop(self.name, dropped)
            else:
                logger.error("tracker database buffer full: dropped %d records", dropped)
        return rows

    def _send_batch(self, rows: list[tuple[Any, ...]]) -> None:
        unsendable: list[tuple[tuple[Any, ...], Exception]] = []
        with self._cond:
            self._seq += 1
            seq = self._seq
            # Made here, so that a batch that cannot be sent is never counted as sent (nor,
            # once a later one is durable, as durable).
            try:
                frame = encode(("records", seq, rows))
            except Exception:
                rows, unsendable = _sendable(rows)
                frame = encode(("records", seq, rows))
            self._unacked.append((seq, rows))
            self._unacked_count += len(rows)
        if unsendable:
            self._drop_unsendable(unsendable)
        if self._closing:  # late: a send that was stuck at close() let this batch through
            with self._send_lock:
                self._spill_here()
            return
        self._send(frame)

    def _drop_unsendable(self, unsendable: list[tuple[tuple[Any, ...], Exception]]) -> None:
        (first, error), count = unsendable[0], len(unsendable)
        logger.error(
            "tracker could not send %d record(s) to the database writer process, dropped; "
            "the first: run %s of job %r (%s: %s)",
            count,
            first[0],
            first[1],
            type(error).__name__,
            error,
        )
        if self._on_drop is not None:
            self._on_drop(self.name, count)

    def tick(self) -> None:
        child = self._child
        if child is None or not child.alive:
            with self._send_lock:
                self._ensure_child()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return not self._unacked_count
            ok = self._ask("flush", remaining)
            if ok and not self._unacked_count:
                return True
            if ok is None:  # no writer process right now: wait for the next start
                time.sleep(min(max(0.0, deadline - time.monotonic()), 0.1))

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ok = self._ask("close", timeout)
        self._closing = True
        child = self._child
        if child is not None and ok is None:
            # No answer in time: killed at once (a stuck send then fails, and returns); what
            # it did not make durable is spilled here.
            child.kill()
        elif child is not None:  # it answered: it exits now
            code = child.stop(max(0.1, deadline - time.monotonic()))
            if code:
                logger.error("tracker database writer process exited with code %s", code)
        if self._unacked_count and not ok:
            with self._send_lock:  # no batch half-sent any more: the list is complete
                self._spill_here()

    def _spill_here(self) -> None:
        """The writer process could not take them: spill what is not durable from here.

        Each call writes the whole list again (to this sink's own spill file, replaced
        atomically), so a batch that comes after the first spill is added, not lost."""
        salt = self._config["salt"]
        # One record per run, its final state over its `running` one (as the writer process
        # keeps them): the tracker that loads the file then writes the state the run ended in.
        records: dict[str, Pending] = {}
        _merge(
            records,
            (
                from_sent(row, salt, seq, index)
                for seq, rows in self._unacked
                for index, row in enumerate(rows)
                if row is not None
            ),
        )
        try:
            name = f"{self.instance}+service"
            path = spill.spill(
                self.spill_dir, self._spill_key, name, spillable(records.values()), self._spill_tag
            )
        except OSError as exc:
            logger.error(
                "tracker could not write %d records to %s before shutdown, nor spill them: %s",
                len(records),
                self._url,
                exc,
            )
            return
        logger.warning(
            "tracker could not write %d records to %s before shutdown; kept in %s "
            "until a tracker on this database starts again",
            len(records),
            self._url,
            path,
        )
        self._unacked_count = 0  # kept in the list, for a later batch's spill
