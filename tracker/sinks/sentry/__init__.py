"""Sentry: an isolation scope per run, each failure sent once, optional Crons check-ins.

Initialise the SDK yourself (``sentry_sdk.init(dsn=...)``); ``Tracker(sentry=True)``
then scopes and reports every run, and ``sentry_crons=True`` adds check-ins. With the
SDK not initialised every call here is skipped.
"""

from __future__ import annotations

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


def enable_sentry(hub: Hub, *, crons: bool = False) -> SentryHook:
    """Scope and report every run of ``hub`` in Sentry (``Tracker(sentry=True)`` does this).

    A failing run's exception is captured once, in the run's scope; APScheduler's own
    "raised an exception" record for it is dropped, so Sentry's logging integration
    does not send it a second time. Jobs not decorated with ``@tracked_job`` are
    captured from that record instead (tagged with their job id). ``crons=True`` adds
    a :class:`SentryCronsSink`.
    """
    hook = SentryHook()
    hub.add_hook(hook)
    _job_errors.report_failures(hub, capture_untracked_failure)
    if crons:
        hub.add_sink(SentryCronsSink(hub))
    return hook
