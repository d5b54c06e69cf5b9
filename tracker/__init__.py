"""tracker: every run of every APScheduler job, recorded and observable.

::

    from tracker import Tracker, tracked_job

    tracker = Tracker()
    tracker.instrument(scheduler)

    @tracked_job
    def cleanup(): ...
"""

from typing import TYPE_CHECKING

from ._context import current_run
from ._decorator import is_tracked, tracked_job
from ._exceptions import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidScheduleError,
    JobNotFoundError,
    TrackerClosedError,
    TrackerError,
)
from ._hub import HubStats
from ._record import Execution, JobState, JobVanished, Origin, RunTimedOut, Status
from ._sink import BaseSink, Sink, TrackerEvent
from ._tracker import Tracker
from .settings import TrackerSettings
from .sinks.alerts import (
    Alert,
    AlertConfig,
    AlertKind,
    AlertPolicy,
    AlertSettings,
    EmailChannel,
    LogChannel,
    SentryChannel,
    Severity,
    SlackChannel,
    WebhookChannel,
    verify_signature,
)
from .sinks.metrics import MetricsSink
from .watchdog import WatchdogSettings

if TYPE_CHECKING:
    from .sinks.logs import RunContextFilter, add_run_context, configure_logging
    from .sinks.tracing import configure_otlp_from_env

_OPTIONAL = {  # need an extra (structlog, OpenTelemetry): imported on first use
    "RunContextFilter": "logs",
    "add_run_context": "logs",
    "configure_logging": "logs",
    "configure_otlp_from_env": "tracing",
}


def __getattr__(name: str) -> object:
    module = _OPTIONAL.get(name)
    if module is None:
        raise AttributeError(f"module 'tracker' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".sinks.{module}", __name__), name)


__all__ = [
    "Alert",
    "AlertConfig",
    "AlertKind",
    "AlertPolicy",
    "AlertSettings",
    "BaseSink",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "EmailChannel",
    "Execution",
    "HubStats",
    "InvalidScheduleError",
    "JobNotFoundError",
    "JobState",
    "JobVanished",
    "LogChannel",
    "MetricsSink",
    "Origin",
    "RunContextFilter",
    "RunTimedOut",
    "SentryChannel",
    "Severity",
    "Sink",
    "SlackChannel",
    "Status",
    "Tracker",
    "TrackerClosedError",
    "TrackerError",
    "TrackerEvent",
    "TrackerSettings",
    "WatchdogSettings",
    "WebhookChannel",
    "add_run_context",
    "configure_logging",
    "configure_otlp_from_env",
    "current_run",
    "is_tracked",
    "tracked_job",
    "verify_signature",
]

__version__ = "0.1.0"
