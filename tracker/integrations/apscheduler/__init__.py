"""APScheduler 3 integration: listeners, a registry of known jobs, and in-run resolution."""

from .instrument import RunsInProgress, SchedulerInstrumentation, instrumentation_for

__all__ = ["RunsInProgress", "SchedulerInstrumentation", "instrumentation_for"]
