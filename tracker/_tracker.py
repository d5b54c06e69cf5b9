"""The :class:`Tracker`: one object that wires the hub, the sinks and the integrations."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import Engine

from . import _context
from ._hub import HubStats, Hub, RunHook
from ._record import Execution, Status
from ._sink import Sink
from .settings import TrackerSettings
from .sinks.database import (
    DatabaseSink,
    create_tracker_engine,
    default_url,
    get_execution,
    prune,
    select_executions,
)

logger = logging.getLogger("tracker")


class Tracker:
    """Records every run of every job of the schedulers it instruments.

    ::

        tracker = Tracker()                      # SQLite file tracker.sqlite3
        tracker = Tracker("postgresql://...")    # PostgreSQL (psycopg 3)
        tracker.instrument(scheduler)
        ...
        tracker.close()                          # flush everything, stop

    Settings not given here come from ``TRACKER_*`` environment variables
    (:class:`~tracker.settings.TrackerSettings`). The most recently created open
    tracker is the default one that :func:`tracked_job` functions called directly
    (outside a scheduler) record to.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        engine: Engine | None = None,
        settings: TrackerSettings | None = None,
        sinks: Iterable[Sink] = (),
        hooks: Iterable[RunHook] = (),
        instance: str | None = None,
    ) -> None:
        self.settings = settings or TrackerSettings()
        url = database_url or self.settings.database_url or default_url()
        self.engine = engine or create_tracker_engine(url)
        self.hub = Hub(instance=instance, interval=self.settings.flush_interval,
                       queue_capacity=self.settings.buffer_size)
        self.database = DatabaseSink(
            self.engine,
            instance=self.hub.instance,
            buffer_size=self.settings.buffer_size,
            auto_migrate=self.settings.auto_migrate,
            heartbeat_interval=self.settings.heartbeat_interval,
            stale_after=self.settings.stale_after,
            on_drop=self.hub.count_drop,
        )
        self.hub.add_sink(self.database)
        for sink in sinks:
            self.hub.add_sink(sink)
        for hook in hooks:
            self.hub.add_hook(hook)
        self._instrumentations: list[Any] = []
        self._lock = threading.Lock()
        _context.push_default(self.hub)

    @property
    def instance(self) -> str:
        """This tracker's instance id (``host:pid/xxxxxx``), stored on every row it writes."""
        return self.hub.instance

    def add_sink(self, sink: Sink) -> None:
        """Send every record and job change from now on to ``sink`` too."""
        self.hub.add_sink(sink)

    def add_hook(self, hook: RunHook) -> None:
        """Wrap every in-run execution with ``hook`` from now on."""
        self.hub.add_hook(hook)

    def instrument(self, scheduler: Any) -> Any:
        """Track every run of every job of an APScheduler 3 scheduler (running or not yet started).

        Returns the :class:`~tracker.integrations.apscheduler.SchedulerInstrumentation`.
        Instrumenting the same scheduler twice returns the existing instrumentation.
        """
        from .integrations.apscheduler import SchedulerInstrumentation, instrumentation_for

        with self._lock:
            existing = instrumentation_for(scheduler)
            if existing is not None and existing.hub is self.hub:
                return existing
            if existing is not None:
                existing.detach()
            instrumentation = SchedulerInstrumentation(scheduler, self.hub)
            self._instrumentations.append(instrumentation)
            return instrumentation

    def executions(
        self,
        job_id: str | None = None,
        status: Status | str | Sequence[Status | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Execution]:
        """Recorded runs, newest first (by fire time). Reads what is written: see :meth:`flush`.

        :param job_id: only this job's runs.
        :param status: one status or several.
        :param since: runs due at or after this (timezone-aware) time.
        :param until: runs due before this time.
        :param limit: at most this many.
        """
        return select_executions(
            self.engine, job_id=job_id, status=status, since=since, until=until, limit=limit
        )

    def execution(self, run_id: str) -> Execution | None:
        """One run by its id, or ``None``."""
        return get_execution(self.engine, run_id)

    def prune(
        self, older_than: timedelta | datetime | None = None, keep_last: int | None = None
    ) -> int:
        """Delete old finished runs in small batches; returns how many were deleted."""
        return prune(self.engine, older_than=older_than, keep_last=keep_last)

    def stats(self) -> HubStats:
        """Pending, dropped and failed records of every sink (the tracker's own health)."""
        return self.hub.stats()

    def flush(self, timeout: float = 5.0) -> bool:
        """Make everything recorded so far durable; ``False`` if ``timeout`` ran out first."""
        return self.hub.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Record runs still in progress as interrupted, flush every sink and stop. Idempotent."""
        if self.hub.closed:
            return
        for instrumentation in self._instrumentations:
            instrumentation.detach()
        _context.remove_default(self.hub)
        self.hub.close(timeout)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
