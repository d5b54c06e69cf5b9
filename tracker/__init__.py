"""tracker: every run of every APScheduler job, recorded and observable.

::

    from tracker import Tracker, tracked_job

    tracker = Tracker()
    tracker.instrument(scheduler)

    @tracked_job
    def cleanup(): ...
"""

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
from ._record import Execution, JobState, Origin, Status
from ._sink import BaseSink, Sink, TrackerEvent
from ._tracker import Tracker
from .settings import TrackerSettings

__all__ = [
    "BaseSink",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "Execution",
    "HubStats",
    "InvalidScheduleError",
    "JobNotFoundError",
    "JobState",
    "Origin",
    "Sink",
    "Status",
    "Tracker",
    "TrackerClosedError",
    "TrackerError",
    "TrackerEvent",
    "TrackerSettings",
    "current_run",
    "is_tracked",
    "tracked_job",
]

__version__ = "0.1.0"
