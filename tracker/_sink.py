"""The protocol every sink satisfies, and the no-op base class sinks extend.

A sink receives what the hub publishes — :class:`~tracker.Execution` records and
:class:`~tracker.JobState` changes — in batches, on a thread of its own
(see :mod:`tracker._dispatch`), never on the job's path. Types a sink does not know
are to be ignored, so new event types can be added without breaking sinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ._record import Execution, JobState, JobVanished, RunTimedOut

TrackerEvent = Execution | JobState | RunTimedOut | JobVanished | tuple[Any, ...]
"""What flows from the hub to the sinks. A plain ``tuple`` is a finished run as a run row
(:mod:`tracker._plain`), sent only to sinks that declare ``run_rows = True``, and only while
every sink does."""


@runtime_checkable
class Sink(Protocol):
    """An outbound destination for tracker events."""

    name: str
    """Short name used in logs and in ``jobtracker_sink_errors_total{sink=...}``."""

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        """Take a batch of events, oldest first. May raise: the hub counts and logs it."""

    def tick(self) -> None:
        """Called every dispatch interval, even without events: retries, heartbeats."""

    def flush(self, timeout: float) -> bool:
        """Make everything handled so far durable/delivered; ``True`` if it all went out."""

    def close(self, timeout: float) -> None:
        """Flush what can be flushed within ``timeout`` and release resources."""


class BaseSink:
    """A sink that does nothing; override what you need.

    Set ``handles_jobs = False`` on a sink that ignores :class:`~tracker.JobState`
    changes: the hub then doesn't queue them for it. Set ``run_rows = True`` on a sink that
    takes finished runs as run rows (:mod:`tracker._plain`) as well as
    :class:`~tracker.Execution` records: while every sink does, the hub sends them so (the
    database and metrics sinks do; the hub then makes no record of a finished run).
    """

    name = "sink"
    handles_jobs = True
    run_rows = False

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        return None

    def tick(self) -> None:
        return None

    def flush(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float) -> None:
        return None
