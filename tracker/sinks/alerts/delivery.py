"""Sending alerts in the background: one worker thread and one bounded queue per channel.

A channel that is down or slow only backs up its own queue: jobs never wait for it
(alerts are produced on the alert sink's thread, not on a job's), and neither do the
other channels. Transient failures (timeouts, refused connections, HTTP 5xx/429, SMTP
4xx) are retried with exponential backoff and jitter, up to ``max_attempts``;
permanent ones (HTTP 4xx, SMTP 5xx, a bad configuration) are not. Each outcome —
``sent``, ``retried``, ``failed``, ``dropped`` (queue full), ``skipped`` (channel
inactive) — is reported to ``on_outcome``, which counts and logs it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .model import Alert

logger = logging.getLogger("tracker.alerts")

SENT, RETRIED, FAILED, DROPPED, SKIPPED = "sent", "retried", "failed", "dropped", "skipped"
OUTCOMES = (SENT, RETRIED, FAILED, DROPPED, SKIPPED)


class DeliveryError(Exception):
    """A channel could not deliver an alert.

    ``transient`` failures are retried (the receiver may be back soon); the others are
    not. ``retry_after`` is the receiver's own hint (HTTP ``Retry-After``), in seconds.
    """

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@runtime_checkable
class Channel(Protocol):
    """Where alerts go. ``send`` raises :class:`DeliveryError` (or ``OSError``) on failure."""

    name: str

    def send(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


def classify(exc: BaseException) -> DeliveryError:
    """Any exception from a channel as a :class:`DeliveryError` (network trouble is transient)."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, TimeoutError | ConnectionError):
        return DeliveryError(f"{type(exc).__name__}: {exc}", transient=True)
    if isinstance(exc, OSError):
        return DeliveryError(f"{type(exc).__name__}: {exc}", transient=True)
    return DeliveryError(f"{type(exc).__name__}: {exc}", transient=False)


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): exponential, capped, jittered."""
    if retry_after is not None and retry_after > 0:
        return min(cap, retry_after)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


@dataclass(order=True, slots=True)
class Item:
    """One alert on its way to one channel."""

    due: float
    seq: int
    alert: Alert = field(compare=False)
    attempts: int = field(default=0, compare=False)


OutcomeCallback = Callable[[str, str, Item, str | None], None]
"""``(channel name, outcome, item, error message)``."""
AttemptCallback = Callable[[str, Item], None]


class ChannelWorker:
    """Delivers to one channel from a bounded queue, on a daemon thread."""

    def __init__(
        self,
        channel: Channel,
        *,
        capacity: int = 1_000,
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        on_outcome: OutcomeCallback | None = None,
        on_attempt: AttemptCallback | None = None,
    ) -> None:
        self.channel = channel
        self.name = channel.name
        self.capacity = capacity
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._on_outcome = on_outcome
        self._on_attempt = on_attempt
        self._heap: list[Item] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._in_flight: Item | None = None
        self._closing = False
        self._deadline = float("inf")
        self._thread = threading.Thread(
            target=self._run, name=f"tracker-alerts-{channel.name}", daemon=True
        )
        self._thread.start()

    @property
    def pending(self) -> int:
        """Alerts waiting or being sent."""
        with self._cond:
            return len(self._heap) + (self._in_flight is not None)

    def submit(self, alert: Alert, attempts: int = 0) -> bool:
        """Queue ``alert``; never blocks. ``False`` (and a ``dropped`` outcome) when full."""
        with self._cond:
            if self._closing or len(self._heap) >= self.capacity:
                item = Item(0.0, next(self._seq), alert, attempts)
                full = True
            else:
                item = Item(time.monotonic(), next(self._seq), alert, attempts)
                heapq.heappush(self._heap, item)
                self._cond.notify()
                full = False
        if full:
            self._report(
                DROPPED,
                item,
                "the channel's queue is full"
                if not self._closing
                else "the tracker is shutting down",
            )
            return False
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or in flight; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def stop(self, deadline: float) -> None:
        """Start closing: queued alerts may still go out until ``deadline`` (monotonic)."""
        with self._cond:
            self._closing = True
            self._deadline = deadline
            self._cond.notify_all()

    def join(self, timeout: float) -> list[Item]:
        """Wait for the thread (after :meth:`stop`); the alerts not delivered in time.

        They are the alerts still queued and the one being sent at the deadline, if any:
        that attempt is left to finish on its own, but nobody waits for its outcome any
        more, so it is handed back with the others (it may then reach its receiver twice).
        """
        self._thread.join(max(0.0, timeout))
        with self._cond:
            left = sorted(self._heap)
            self._heap = []
            if self._in_flight is not None:
                left.insert(0, self._in_flight)
            self._cond.notify_all()
        try:
            self.channel.close()
        except Exception:
            logger.debug("closing alert channel %r failed", self.name, exc_info=True)
        return left

    def close(self, timeout: float) -> list[Item]:
        """:meth:`stop` then :meth:`join`: queued alerts get ``timeout`` seconds to go out."""
        self.stop(time.monotonic() + timeout)
        return self.join(timeout + 0.05)

    # -- the thread --------------------------------------------------------------------

    def _next(self) -> Item | None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._closing and (now >= self._deadline or not self._heap):
                    return None
                if self._heap and self._heap[0].due <= now:
                    item = heapq.heappop(self._heap)
                    self._in_flight = item
                    return item
                wait = self._heap[0].due - now if self._heap else None
                if self._closing:
                    wait = min(wait if wait is not None else 0.05, self._deadline - now)
                self._cond.wait(wait)

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            try:
                self._deliver(item)
            finally:
                with self._cond:
                    self._in_flight = None
                    self._cond.notify_all()

    def _deliver(self, item: Item) -> None:
        if not getattr(self.channel, "active", True):
            self._report(SKIPPED, item, None)
            return
        item.attempts += 1
        if self._on_attempt is not None:
            self._on_attempt(self.name, item)
        try:
            self.channel.send(item.alert)
        except Exception as exc:
            error = classify(exc)
            if error.transient and item.attempts < self.max_attempts:
                delay = backoff_delay(
                    item.attempts, self.backoff, self.max_backoff, error.retry_after
                )
                self._report(RETRIED, item, f"{error} (retry in {delay:.2f} s)")
                with self._cond:
                    item.due = time.monotonic() + delay
                    heapq.heappush(self._heap, item)
                return
            reason = (
                str(error)
                if not error.transient
                else (f"{error} (gave up after {item.attempts} attempts)")
            )
            self._report(FAILED, item, reason)
            return
        self._report(SENT, item, None)

    def _report(self, outcome: str, item: Item, error: str | None) -> None:
        if self._on_outcome is None:
            return
        try:
            self._on_outcome(self.name, outcome, item, error)
        except Exception:
            logger.exception("recording the outcome of an alert to %r failed", self.name)
