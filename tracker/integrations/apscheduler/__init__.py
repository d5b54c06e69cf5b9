"""APScheduler 3 integration: listeners, a registry of known jobs, and in-run resolution."""

from .instrument import SchedulerInstrumentation, instrumentation_for

__all__ = ["SchedulerInstrumentation", "instrumentation_for"]
