"""Sentry: an isolation scope per run, each failure sent once, optional Crons check-ins.

Initialise the SDK yourself (``sentry_sdk.init(dsn=...)``); ``Tracker(sentry=True)``
then scopes and reports every run, and ``sentry_crons=True`` adds check-ins. With the
SDK not initialised every call here is skipped.
"""

from __future__ import annotations

from sentry_sdk.integrations.logging import ignore_logger

from ..._hub import Hub
from .. import _job_errors
from .crons import SentryCronsSink, UnsupportedSchedule, monitor_config, monitor_slug
from .scope import SentryHook, capture_untracked_failure

__all__ = [
    "SentryCronsSink",
    "SentryHook",
    "UnsupportedSchedule",
    "enable_sentry",
    "monitor_config",
    "monitor_slug",
]

LIFECYCLE_LOGGER = "tracker.runs"
"""The logger of the lifecycle log events (``logs=True``), whose ``job_failed`` and
``job_timed_out`` records report failures this module sends to Sentry itself."""


def enable_sentry(hub: Hub, *, crons: bool = False) -> SentryHook:
    """Scope and report every run of ``hub`` in Sentry (``Tracker(sentry=True)`` does this).

    A failing run's exception is captured once, in the run's scope; APScheduler's own
    "raised an exception" record for it is dropped, so Sentry's logging integration
    does not send it a second time. Jobs not decorated with ``@tracked_job`` are
    captured from that record instead (tagged with their job id). The lifecycle log
    events (``logs=True``: ``job_failed``, ``job_timed_out``, logger ``tracker.runs``) are
    kept from Sentry's logging integration too — they reach it when structlog writes
    through the standard library — whether the SDK is initialised before or after this.
    ``crons=True`` adds a :class:`SentryCronsSink`.
    """
    _ignore_lifecycle_loggers(hub)
    hook = SentryHook()
    hub.add_hook(hook)
    _job_errors.report_failures(hub, capture_untracked_failure)
    if crons:
        hub.add_sink(SentryCronsSink(hub))
    return hook


def _ignore_lifecycle_loggers(hub: Hub) -> None:
    """Keep Sentry's logging integration (its events and breadcrumbs) from sending the
    lifecycle events of ``hub``'s log sinks: their failures are sent already.
    The integration reads ``ignore_logger``'s list at each record, so this holds whether
    the SDK is initialised before or after."""
    ignore_logger(LIFECYCLE_LOGGER)
    try:
        from ..logs import LifecycleLogSink
    except ImportError:  # no structlog: no log sinks
        return
    for sink in hub.sinks:
        if isinstance(sink, LifecycleLogSink):  # one given to the Tracker, maybe renamed
            ignore_logger(sink.logger_name)
