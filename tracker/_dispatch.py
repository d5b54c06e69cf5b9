"""One background worker per sink: a bounded queue drained in batches.

Publishing is a ``deque.append`` on the caller's thread (the job's, or the
scheduler's); everything else — formatting, I/O, retries — happens on the sink's
own thread. A slow or failing sink only backs up its own queue: other sinks and
the job never wait for it. When its queue is full, new events for that sink are
dropped and counted.

At close, a sink whose thread is stuck (in a database call that never returns) is closed
from the closing thread all the same; a sink with ``handles_after_close = True`` (the database
sink: it spills them) is then handed what is still queued on that thread, and for any other
sink what its thread could not take by then is dropped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from ._sink import Sink, TrackerEvent

logger = logging.getLogger("tracker")
_LATE_JOIN_S = 2.0


class _FlushRequest:
    __slots__ = ("done", "ok", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.done = threading.Event()
        self.ok = False


class SinkWorker:
    """Feeds one sink from a bounded queue on a daemon thread."""

    def __init__(
        self,
        sink: Sink,
        *,
        capacity: int,
        interval: float,
        on_error: Callable[[str, BaseException], None],
        on_drop: Callable[[str, int], None],
    ) -> None:
        self.sink = sink
        self.capacity = capacity
        self.interval = interval
        self._queue: deque[TrackerEvent] = deque()
        self._flushes: list[_FlushRequest] = []
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._next_tick = 0.0
        self._on_error = on_error
        self._on_drop = on_drop
        self._thread = threading.Thread(
            target=self._run, name=f"tracker-sink-{sink.name}", daemon=True
        )
        self._thread.start()

    @property
    def pending(self) -> int:
        """Events waiting in this worker's queue."""
        return len(self._queue)

    def put(self, event: TrackerEvent) -> None:
        """Queue ``event``; never blocks. Drops (and counts) it when the queue is full."""
        if len(self._queue) >= self.capacity or self._stopping:
            self._on_drop(self.sink.name, 1)
            return
        self._queue.append(event)

    def put_many(self, events: list[TrackerEvent]) -> None:
        """Queue ``events`` and wake the worker; never blocks. Drops (and counts) what
        does not fit."""
        if not events:
            return
        room = 0 if self._stopping else self.capacity - len(self._queue)
        if room < len(events):
            self._on_drop(self.sink.name, len(events) - max(room, 0))
            if room <= 0:
                return
            events = events[:room]
        self._queue.extend(events)
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued before this call was handled and the sink flushed."""
        if not self._thread.is_alive():
            return not self._queue
        request = _FlushRequest(timeout)
        with self._flush_lock:
            self._flushes.append(request)
        self._wake.set()
        return request.done.wait(timeout) and request.ok

    def stop(self, timeout: float) -> None:
        """Drain the queue, close the sink and end the thread (within ``timeout``)."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        self._stopping = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self.sink.close(max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # a sink's own failure stays ours
            self._on_error(self.sink.name, exc)
        if not self._thread.is_alive():
            return
        if getattr(self.sink, "handles_after_close", False):
            # Stuck in the sink (a database call that does not return), which kept what it
            # had at close() and takes late events on any thread: hand it what is queued.
            self._hand_over_queue()
            return
        # It was stuck in the sink, which close() may have released (a writer process
        # killed): let it hand over what is left (spilled by then) before we return.
        self._thread.join(_LATE_JOIN_S)
        if self._thread.is_alive():
            left = self._take_queue()
            if left:  # nobody will hand them to the sink now: lost, and said so
                logger.error(
                    "tracker sink %r did not return within its close timeout; %d queued "
                    "records dropped",
                    self.sink.name,
                    len(left),
                )
                self._on_drop(self.sink.name, len(left))

    def _take_queue(self) -> list[TrackerEvent]:
        """Take what is queued (safe beside the worker's thread: each event goes to one)."""
        taken: list[TrackerEvent] = []
        queue = self._queue
        while True:
            try:
                taken.append(queue.popleft())
            except IndexError:
                return taken

    def _hand_over_queue(self) -> None:
        left = self._take_queue()
        if left:
            self._call(self.sink.handle, left)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()
            self._tick()
            if self._stopping and not self._queue and not self._flushes:
                return

    def _tick(self) -> None:
        self._next_tick = time.monotonic() + self.interval
        self._call(self.sink.tick)

    def _drain(self) -> None:
        # Take the flush requests first: everything queued before them is then in the queue.
        with self._flush_lock:
            flushes, self._flushes = self._flushes, []
        queue = self._queue
        popleft = queue.popleft
        while queue:
            batch = [popleft() for _ in range(min(len(queue), 5000))]
            self._call(self.sink.handle, batch)
            # Events that keep coming as fast as the sink takes them (a database some
            # milliseconds away) must not hold the tick back: the heartbeat is written there.
            if time.monotonic() >= self._next_tick:
                self._tick()
        if flushes:
            ok = self._flush_sink(max(r.timeout for r in flushes))
            for request in flushes:
                request.ok = ok
                request.done.set()

    def _flush_sink(self, timeout: float) -> bool:
        try:
            return bool(self.sink.flush(timeout))
        except Exception as exc:
            self._on_error(self.sink.name, exc)
            return False

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._on_error(self.sink.name, exc)
