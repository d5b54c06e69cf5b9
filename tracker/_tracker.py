"""The :class:`Tracker`: one object that wires the hub, the sinks and the integrations."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client.registry import CollectorRegistry
from sqlalchemy import Engine

from . import _context
from ._exceptions import ConfigurationError
from ._hub import Hub, HubStats, RunHook
from ._ids import checked_instance
from ._record import Execution, Status
from ._sink import Sink
from .settings import TrackerSettings
from .sinks.alerts import AlertConfig, AlertSink, resolve_alerts
from .sinks.database import (
    DatabaseSink,
    ProcessDatabaseSink,
    create_tracker_engine,
    default_url,
    get_execution,
    prune,
    select_executions,
)
from .sinks.metrics import MetricsSettings, MetricsSink
from .sinks.metrics.seed import seed_from_history
from .watchdog import Watchdog, WatchdogSettings
from .watchdog import resolve_settings as resolve_watchdog

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

logger = logging.getLogger("tracker")


def _signal(module: str, extra: str) -> Any:
    """Import ``tracker.sinks.<module>``, or say which extra to install."""
    try:
        return importlib.import_module(f"{__package__}.sinks.{module}")
    except ImportError as exc:
        raise ConfigurationError(
            f"{module} needs the {extra!r} extra: pip install 'tracker[{extra}]' ({exc})"
        ) from exc


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

    Prometheus metrics (``tracker.metrics``, a :class:`~tracker.sinks.metrics.MetricsSink`)
    are on by default, on ``registry`` (default prometheus-client's global ``REGISTRY``);
    ``metrics=False`` turns them off, a ``MetricsSink`` in ``sinks`` is used instead.

    Other signals are off until asked for (``docs/signals.md``): ``tracing=True`` gives
    every run an OpenTelemetry span (on ``tracer_provider``, default the global one);
    ``logs=True`` one structlog event per lifecycle change and run ids on the job's own
    log lines (``logs="json"``/``"console"`` also calls :func:`~tracker.configure_logging`);
    ``sentry=True`` a Sentry scope per run and each failure sent once, ``sentry_crons=True``
    Sentry Crons check-ins. The run id and trace id connect them all.

    The watchdog (``tracker.watchdog``) is on by default (``watchdog=False`` or
    ``TRACKER_WATCHDOG_ENABLED=false`` turns it off; ``WatchdogSettings(...)`` tunes it):
    runs past their ``max_runtime`` are reported at the deadline, fire times that pass
    without a run become ``missed``, jobs that vanish from their store are reported.
    Alerts (``tracker.alerts``, ``docs/alerts.md``) are on with ``alerts=AlertConfig(...)``
    or ``alerts=True``, or when ``TRACKER_ALERT_*`` configures a channel.

    ``instance`` names this tracker on every row it writes (default ``host:pid/xxxxxx``,
    unique per tracker). Give your own only if it is unique among live trackers on the
    database, and at most 255 characters (else :class:`ConfigurationError`).
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
        metrics: bool = True,
        registry: CollectorRegistry | None = None,
        tracing: bool = False,
        tracer_provider: TracerProvider | None = None,
        logs: bool | Literal["json", "console", "auto"] = False,
        sentry: bool = False,
        sentry_crons: bool = False,
        alerts: AlertConfig | bool | None = None,
        watchdog: WatchdogSettings | bool | None = None,
    ) -> None:
        if instance:  # checked before anything starts: a bad id raises ConfigurationError
            checked_instance(instance)
        self.settings = settings or TrackerSettings()
        # Checked before anything starts: a bad channel raises ConfigurationError here.
        alert_config = resolve_alerts(alerts)
        watchdog_settings = resolve_watchdog(watchdog)
        sinks = list(sinks)
        given_metrics = next((s for s in sinks if isinstance(s, MetricsSink)), None)
        metrics_settings = MetricsSettings() if metrics and given_metrics is None else None
        url = database_url or self.settings.database_url or default_url()
        self.engine = engine or create_tracker_engine(url)
        self.hub = Hub(
            instance=instance,
            interval=self.settings.flush_interval,
            queue_capacity=self.settings.buffer_size,
        )
        self.hub.own_engine(self.engine)  # (its reads, in a process forked from this one)
        self.database: DatabaseSink | ProcessDatabaseSink
        if self.settings.database_writer == "process":
            self.database = ProcessDatabaseSink(
                self.engine.url.render_as_string(hide_password=False),
                instance=self.hub.instance,
                buffer_size=self.settings.buffer_size,
                auto_migrate=self.settings.auto_migrate,
                heartbeat_interval=self.settings.heartbeat_interval,
                stale_after=self.settings.stale_after,
                on_drop=self.hub.count_drop,
                on_error=self.hub.report_error,
                spill_dir=self.settings.spill_dir,
                interval=self.settings.flush_interval,
            )
        else:
            self.database = DatabaseSink(
                self.engine,
                instance=self.hub.instance,
                buffer_size=self.settings.buffer_size,
                auto_migrate=self.settings.auto_migrate,
                heartbeat_interval=self.settings.heartbeat_interval,
                stale_after=self.settings.stale_after,
                on_drop=self.hub.count_drop,
                spill_dir=self.settings.spill_dir,
            )
        self.hub.add_sink(self.database)
        # Prometheus metrics: a MetricsSink given in ``sinks``, else one of ours on ``registry``.
        self.metrics: MetricsSink | None = given_metrics
        if metrics_settings is not None:
            self.metrics = MetricsSink(registry, settings=metrics_settings)
            self.hub.add_sink(self.metrics)
        for sink in sinks:
            self.hub.add_sink(sink)
        self._seeding: threading.Thread | None = None
        self._downtime_checks: list[Callable[[float], None]] = []
        """Per instrumented scheduler, waiting for its downtime check's thread (see close())."""
        if self.metrics is not None:
            self.metrics.bind(self.hub)
            # From the history, on a thread: a restart must not reset consecutive failures.
            self._seeding = seed_from_history(
                self.metrics, self.engine, on_error=self.hub.report_error
            )
        # Traces first: the log and Sentry hooks read the span's ids from the run.
        if tracing or tracer_provider is not None:
            _signal("tracing", "tracing").enable_tracing(self.hub, tracer_provider)
        if logs:
            _signal("logs", "logging").enable_logs(self.hub, None if logs is True else logs)
        if sentry or sentry_crons:
            _signal("sentry", "sentry").enable_sentry(self.hub, crons=sentry_crons)
        for hook in hooks:
            self.hub.add_hook(hook)
        self.alerts: AlertSink | None = None
        if alert_config is not None:
            self.alerts = AlertSink(
                self.engine,
                instance=self.hub.instance,
                config=alert_config,
                counter=self.metrics.count_alert if self.metrics is not None else None,
            )
            self.hub.add_sink(self.alerts)
        self.watchdog: Watchdog | None = None
        if watchdog_settings is not None:
            self.watchdog = Watchdog(self.hub, watchdog_settings)
            self.watchdog.start()
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
            if self.settings.missed_while_down:  # checked at each start of the scheduler
                from .integrations.apscheduler.downtime import watch_starts

                self._downtime_checks.append(
                    watch_starts(instrumentation, self.hub, self.engine, self.flush)
                )
            if self.watchdog is not None:
                from .integrations.apscheduler.watchdog import attach

                attach(self.watchdog, instrumentation)
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
        if self.watchdog is not None:
            self.watchdog.stop()
        self.hub.close(timeout)
        # Threads reading the history: their connections go back before the pool is let go
        # (a connection still out then is left to the garbage collector, open).
        if self._seeding is not None:
            self._seeding.join(min(timeout, 2.0))
        for wait in self._downtime_checks:
            wait(min(timeout, 2.0))
        self.engine.dispose()  # the readers' connections (a writer process has its own)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
