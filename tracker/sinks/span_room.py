"""Room in the SDK's batch span processors' queues, waited for before a span is handed over.

The SDK's ``BatchSpanProcessor`` keeps at most ``max_queue_size`` spans (2,048 by default)
for its worker thread to export and, when the queue is full, drops the oldest, with a
warning for each. A burst of runs — thousands due at once, a scheduler catching up after a
pause — ends spans faster than that worker exports them while the interpreter is busy with
the jobs, and they were lost there (``bench/overhead.py --pin 0``: 916 of 5,000). The
span builder's thread (never a job's) hands spans over only while every batch processor
has room, waiting a little for the workers; what still does not fit waits with the builder,
whose own bound counts what it drops.

Reads the processor's private queue (the SDK has no public way to ask how full it is):
``_batch_processor._queue`` since opentelemetry-sdk 1.33, ``queue`` before. With neither
(another SDK), nothing is waited for, as before.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace.export import BatchSpanProcessor

_POLL_S = 0.0005


class _Queue:
    """One batch processor's queue: how full, how to wake its worker, whether it is shut."""

    __slots__ = ("is_shut", "items", "size", "wake")

    def __init__(
        self, items: deque[Any], size: int, wake: Callable[[], None], is_shut: Callable[[], bool]
    ) -> None:
        self.items = items
        self.size = size
        self.wake = wake
        self.is_shut = is_shut

    def full(self) -> bool:
        return len(self.items) >= self.size and not self.is_shut()


def _queue_of(processor: BatchSpanProcessor) -> _Queue | None:
    inner = getattr(processor, "_batch_processor", None)
    if inner is not None:  # opentelemetry-sdk >= 1.33
        items, size = getattr(inner, "_queue", None), getattr(inner, "_max_queue_size", None)
        awaken = getattr(inner, "_worker_awaken", None)
        if isinstance(items, deque) and isinstance(size, int) and awaken is not None:
            return _Queue(items, size, awaken.set, lambda: bool(inner._shutdown))
        return None
    items, size = getattr(processor, "queue", None), getattr(processor, "max_queue_size", None)
    condition = getattr(processor, "condition", None)
    if isinstance(items, deque) and isinstance(size, int) and condition is not None:

        def wake() -> None:
            with condition:
                condition.notify()

        return _Queue(items, size, wake, lambda: bool(getattr(processor, "done", False)))
    return None


class SpanRoom:
    """The batch processors of one tracer's provider, and waiting for room in all of them."""

    def __init__(self, span_processor: object) -> None:
        self._span_processor = span_processor
        self._seen: tuple[object, ...] | None = None
        self._queues: list[_Queue] = []

    def _current(self) -> list[_Queue]:
        """The queues of the provider's batch processors now (processors may be added)."""
        processors = getattr(self._span_processor, "_span_processors", None)
        if not isinstance(processors, tuple):
            return []
        if processors is not self._seen:
            self._seen = processors
            queues = (_queue_of(p) for p in processors if isinstance(p, BatchSpanProcessor))
            self._queues = [q for q in queues if q is not None]
        return self._queues

    def wait(self, until: float) -> bool:
        """Whether every batch processor has room for one more span, waiting (at most until
        the ``time.monotonic()`` value ``until``) while one is full."""
        for queue in self._current():
            while queue.full():
                if time.monotonic() >= until:
                    return False
                queue.wake()
                time.sleep(_POLL_S)
        return True
