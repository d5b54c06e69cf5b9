"""The database writer process: a :class:`DatabaseSink` fed through a pipe by the tracker.

Started by :class:`~tracker.sinks.database.process_writer.ProcessDatabaseSink` as
``python -c "...main()"``; it reads messages (:mod:`.frames`) on its standard input and
answers on its standard output, which nothing else may write to (``print`` goes to
standard error here):

* ``("config", {...})`` first: where and how to write;
* ``("records", seq, [row, ...])``: records as plain tuples, or runs as run rows (see
  :mod:`tracker._plain`; a run row's id, when it has none, comes from ``seq`` and its place;
  a ``None`` holds the place of a record the tracker took out);
* ``("flush", token, timeout)`` and ``("close", token, timeout)``.

It answers ``("status", token, ok, acked, stats, dropped)``: at start (token ``"ready"``),
for each flush and close, and whenever what it reports changed. ``acked`` is the highest
``seq`` up to which every record is durable (written, spilled at close, or dropped and
counted). When the tracker's process ends, even killed, this one sees its input close,
writes what it holds (spills it if the database is down) and exits.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from ..._plain import RunRow, sent_row
from ..._record import Execution
from .engine import create_tracker_engine
from .frames import encode, read_frame, write_all
from .writer import DatabaseSink, close_interrupted

logger = logging.getLogger("tracker.database")

_BATCH = 50_000  # records merged before one write, when frames queue up
_REPORT_EVERY_S = 1.0


class _Writer:
    """The loop of the writer process."""

    def __init__(self, config: dict[str, Any], fd_in: int, fd_out: int) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.interval = float(config["interval"])
        self.salt = int(config["salt"])
        self.received = 0  # highest seq received
        self.acked = 0
        self.dropped = 0
        self.reported: tuple[object, ...] = ()
        self.orphaned = False
        self.report_by = 0.0
        self.sink = DatabaseSink(
            create_tracker_engine(config["url"]),
            instance=config["instance"],
            buffer_size=config["buffer_size"],
            auto_migrate=config["auto_migrate"],
            heartbeat_interval=config["heartbeat_interval"],
            stale_after=config["stale_after"],
            max_backoff=config["max_backoff"],
            spill_dir=config["spill_dir"],
            on_drop=self._count_drop,
            pid=config["pid"],  # the service's: its death, not this process's, ends its runs
        )

    def _count_drop(self, sink: str, count: int) -> None:
        self.dropped += count

    def stats(self) -> dict[str, Any]:
        sink = self.sink
        return {
            "healthy": sink.healthy,
            "last_error": sink.last_error,
            "last_write_at": sink.last_write_at,
            "written": sink.written,
        }

    def report(self, token: object = None, ok: bool | None = None) -> None:
        """Send the status when asked (``token``) or when it changed."""
        if not self.sink.pending:
            self.acked = self.received
        stats = self.stats()
        state = (self.acked, self.dropped, stats["healthy"], stats["last_error"])
        now = time.monotonic()
        if token is None and state == self.reported and now < self.report_by:
            return
        self.reported = state
        self.report_by = now + _REPORT_EVERY_S  # at least this often: the tracker sees it alive
        message = ("status", token, ok, self.acked, stats, self.dropped)
        self.dropped = 0
        if self.orphaned:
            return
        try:
            write_all(self.fd_out, encode(message))
        except OSError:  # the tracker's process is gone; its input's end comes next
            self.orphaned = True

    def run(self) -> None:
        self.report("ready", self.sink.healthy)
        next_tick = time.monotonic() + self.interval
        while True:
            # Every interval, busy or not: the tick writes the heartbeat (input that never
            # runs dry, records coming faster than a distant database takes them, must not
            # keep it from being written: other trackers would take this instance for dead).
            if time.monotonic() >= next_tick:
                self.sink.tick()
                next_tick = time.monotonic() + self.interval
                self.report()
            timeout = max(0.0, next_tick - time.monotonic())
            if not select.select([self.fd_in], [], [], timeout)[0]:
                continue
            try:
                message = read_frame(self.fd_in)
            except EOFError:  # the tracker's process is gone: keep what was sent
                self.sink.close(30.0)
                self.interrupt_orphans()
                return
            if self.dispatch(message):
                return

    def interrupt_orphans(self) -> None:
        """The service's process is gone without closing (killed): its runs still ``running``
        can no longer end. Closed here as ``interrupted``, now: its instance was just marked
        stopped (the records it had sent are written), so no later tracker would look at them.
        """
        instance = self.sink.instance
        now = datetime.now(UTC)
        try:
            with self.sink.engine.begin() as conn:
                closed = close_interrupted(
                    conn,
                    instance,
                    now,
                    f"The process running this job ({instance}) ended while it was in "
                    f"progress, without closing its tracker; noticed at {now.isoformat()}.",
                )
        except Exception as exc:  # the next tracker's start does it, once the pid is gone
            logger.error("tracker could not close the runs of %s as interrupted: %s", instance, exc)
            return
        finally:
            self.sink.engine.dispose()
        if closed:
            logger.warning("tracker closed %d runs of %s as interrupted", closed, instance)

    def records(self, message: tuple[Any, ...]) -> list[Execution | RunRow]:
        """The records and run rows (:func:`~tracker._plain.sent_row`) of a ``records``
        message. A ``None`` in its list is one the tracker took out (a ``running`` state its
        final one supersedes) where it was, so that the others keep their places (the ids of
        run rows sent without one)."""
        _, seq, rows = message
        salt = self.salt
        self.received = seq
        return [sent_row(row, salt, seq, i) for i, row in enumerate(rows) if row is not None]

    def dispatch(self, message: tuple[Any, ...]) -> bool:
        """Act on one message (and the records queued behind it); ``True`` to stop."""
        kind = message[0]
        if kind == "records":
            records = self.records(message)
            while len(records) < _BATCH and select.select([self.fd_in], [], [], 0)[0]:
                try:
                    following = read_frame(self.fd_in)
                except EOFError:
                    break  # handled at the next read
                if following[0] != "records":
                    self.sink.handle(records)
                    return self.dispatch(following)
                records.extend(self.records(following))
            self.sink.handle(records)
            self.report()
        elif kind == "flush":
            ok = self.sink.flush(float(message[2]))
            self.report(message[1], ok)
        elif kind == "close":
            self.sink.close(float(message[2]))
            # Written, or spilled to a file the next tracker loads: nothing is left here.
            ok = not self.sink.pending
            self.report(message[1], ok)
            return True
        return False


def main() -> None:
    """Entry point of the writer process."""
    # Ctrl-C or a TERM sent to the whole process group is the tracker's to handle: it closes
    # this process's input (or dies, which closes it too), and that ends this one cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.stderr is None:  # the tracker's own standard error is closed (`2>&-`): nowhere
        _output_to_nowhere()
    fd_in = sys.stdin.fileno()
    fd_out = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray output must not reach the pipe
    kind, config = read_frame(fd_in)
    if kind != "config":
        raise SystemExit(f"tracker database writer: expected the config first, got {kind!r}")
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s %(levelname)s %(name)s [writer {os.getpid()}] %(message)s",
    )
    logging.getLogger("tracker").setLevel(config.get("log_level", logging.WARNING))
    writer = _Writer(config, fd_in, fd_out)
    try:
        writer.run()
    except Exception:
        logger.exception("tracker database writer process failed")
        raise SystemExit(1) from None


def _output_to_nowhere() -> None:
    """Standard error as ``/dev/null``, on its descriptor too: a descriptor opened later must
    not become number 2, where a library's stray output would reach it."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != 2:
        os.dup2(null, 2)
        os.close(null)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115


if __name__ == "__main__":
    main()
