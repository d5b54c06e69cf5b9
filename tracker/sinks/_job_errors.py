"""APScheduler's own report of a failed job, silenced where the tracker reports it.

APScheduler logs every exception a job raises with
``logger.exception('Job "%s" raised an exception', job)`` on the
``apscheduler.executors.<alias>`` logger. When a tracker reports failures itself — a
``job_failed`` log event, a Sentry event — that record would report the same failure a
second time: another log line with the traceback and, through Sentry's logging
integration, a second Sentry event.

:class:`JobErrorFilter`, attached to those loggers, drops that record for jobs of
schedulers instrumented by a tracker that reports failures. Before dropping it, it hands
the exception to whoever would otherwise miss it: for a job *not* decorated with
``@tracked_job`` (whose exception no in-run hook saw), the tracker's Sentry reporter; for
a tracker that reports logs but not Sentry, Sentry itself when its logging integration is
on (it would have sent the record) — unless structlog writes through the standard library,
where the ``job_failed`` line reaches that integration already. Every other record, and every
record of other schedulers, passes untouched. Standard library only (Sentry imported when present).

For a tracker that writes lifecycle log events (``logs=True``), APScheduler's warnings that a
fire time was missed (``Run time of job ... was missed by``) or skipped (``Execution of job
... skipped: maximum number of running instances reached``) repeat its ``job_missed`` and
``job_skipped`` events: they are dropped too (on ``apscheduler.executors.*`` and on
``apscheduler.scheduler``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .._decorator import is_tracked
from .._hub import Hub

__all__ = ["JobErrorFilter", "attach_filter", "report_failures", "report_lifecycle"]

MESSAGE = 'Job "%s" raised an exception'
"""The message APScheduler 3's ``run_job``/``run_coroutine_job`` log a job's exception with."""
MISSED = 'Run time of job "%s" was missed by %s'
SKIPPED = 'Execution of job "%s" skipped: maximum number of running instances reached (%d)'
"""APScheduler 3's warnings of a missed fire time (``run_job``) and of a skipped one (the
scheduler's ``_process_jobs``)."""

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Reporter = Callable[[Any, str, ExcInfo], None]
"""Called with (APScheduler job, the tracker's job id, exc_info) for an undecorated job."""

_reporters: weakref.WeakKeyDictionary[Hub, list[Reporter]] = weakref.WeakKeyDictionary()
_lifecycle: weakref.WeakSet[Hub] = weakref.WeakSet()
_seen = -1


def report_failures(hub: Hub, on_untracked: Reporter | None = None) -> None:
    """Declare that ``hub``'s tracker reports its jobs' failures (and how, for undecorated jobs)."""
    reporters = _reporters.setdefault(hub, [])
    if on_untracked is not None and on_untracked not in reporters:
        reporters.append(on_untracked)
    attach_filter(force=True)


def report_lifecycle(hub: Hub) -> None:
    """Declare that ``hub``'s tracker writes lifecycle log events: it reports failures (see
    :func:`report_failures`), and APScheduler's own missed/skipped warnings are dropped for its
    schedulers' jobs."""
    _lifecycle.add(hub)
    report_failures(hub)


def _said_by_lifecycle_events(record: logging.LogRecord) -> bool:
    """Whether ``record`` (a missed/skipped warning) is of a job whose tracker writes lifecycle
    events, which say the same."""
    from ..integrations.apscheduler import instrumentation_for

    args = record.args
    job: Any = args[0] if isinstance(args, tuple) and args else None
    inst = instrumentation_for(getattr(job, "_scheduler", None))
    return inst is not None and not inst.hub.closed and inst.hub in _lifecycle


class JobErrorFilter(logging.Filter):
    """Drops APScheduler's "raised an exception" record when a tracker reports that failure, and
    its missed/skipped warnings when a tracker writes lifecycle events."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == MISSED or record.msg == SKIPPED:
            try:
                return not (_lifecycle and _said_by_lifecycle_events(record))
            except Exception:  # never lose a record because of us
                return True
        if record.msg != MESSAGE or not record.exc_info or not _reporters:
            return True
        try:
            from ..integrations.apscheduler import instrumentation_for

            args = record.args
            job: Any = args[0] if isinstance(args, tuple) and args else None
            inst = instrumentation_for(getattr(job, "_scheduler", None))
            if inst is None or inst.hub.closed:
                return True
            reporters = _reporters.get(inst.hub)
            if reporters is None:
                return True
            job_id = inst.manual_origin(job.id) or job.id
            if not reporters:
                # Only logs are reported: this record would have reached Sentry through its
                # logging integration; send it there ourselves rather than lose it.
                reporters = [_sentry_fallback]
            elif is_tracked(job.func):
                reporters = []  # the run's own hooks have reported it
            for report in reporters:
                try:
                    report(job, job_id, record.exc_info)  # type: ignore[arg-type]
                except Exception:
                    logging.getLogger("tracker").debug("reporter failed", exc_info=True)
            return False
        except Exception:  # never lose a record because of us
            return True


def _sentry_fallback(job: Any, job_id: str, exc_info: ExcInfo) -> None:
    try:
        import sentry_sdk
        from sentry_sdk.integrations.logging import LoggingIntegration
    except ImportError:
        return
    if sentry_sdk.get_client().get_integration(LoggingIntegration) is None:
        return
    if _lifecycle_through_stdlib():
        return  # its `job_failed` line reaches Sentry's logging integration: once is enough
    from .sentry.scope import capture_untracked_failure

    capture_untracked_failure(job, job_id, exc_info)


def _lifecycle_through_stdlib() -> bool:
    """Whether structlog writes through the standard library (its ``LoggerFactory``), where
    Sentry's logging integration sees the lifecycle events."""
    try:
        import structlog
    except ImportError:
        return False
    factory = structlog.get_config().get("logger_factory")
    return isinstance(factory, structlog.stdlib.LoggerFactory) or factory is logging.getLogger


_FILTER = JobErrorFilter()


def attach_filter(*, force: bool = False) -> None:
    """Attach the filter to every ``apscheduler.executors.*`` logger (cheap when none is new).

    Executors create their logger when the scheduler starts; sinks call this again when
    they see jobs, so executors added later are covered too.
    """
    global _seen
    names = logging.Logger.manager.loggerDict
    if not force and len(names) == _seen:
        return
    for name in ["apscheduler.executors.default", "apscheduler.scheduler", *list(names)]:
        if name.startswith("apscheduler.executors.") or name == "apscheduler.scheduler":
            target = logging.getLogger(name)
            if _FILTER not in target.filters:
                target.addFilter(_FILTER)
    _seen = len(names)
