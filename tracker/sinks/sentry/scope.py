"""A Sentry isolation scope per run, and a failing run's exception sent exactly once.

:class:`SentryHook` runs on the job's path: it forks an isolation scope for the run
(:func:`sentry_sdk.isolation_scope`), tags it (``job_id``, ``run_id``, ``job_status``),
puts the fire time, lateness and origin in a ``job`` context, names the transaction
after the job and starts the scope's trace from the run's OpenTelemetry trace id (or a
fresh one), so a Sentry event, the run's span, its log lines and its row share ids.
At the end it captures the exception of a failed run — once — and restores the
previous scopes, so nothing a run (or the job's own code) sets on the scope reaches the
next run on the same pool thread.

Every call is skipped when the SDK is not initialised, and nothing here can reach the
job: the hub catches and counts whatever a hook raises.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import sentry_sdk

from ..._hub import reported_error
from ..._record import Status
from ..._run import Run
from .._job_errors import ExcInfo
from ..iso import iso

__all__ = ["SentryHook", "capture_untracked_failure", "sentry_enabled"]

_REPORTED = frozenset({Status.FAILED, Status.TIMED_OUT})


def sentry_enabled() -> bool:
    """Whether the SDK was initialised with somewhere to send to (a DSN or a transport)."""
    client = sentry_sdk.get_client()
    return client.is_active() and getattr(client, "transport", None) is not None


def _job_context(run: Run) -> dict[str, Any]:
    return {
        "job_id": run.job_id,
        "job_name": run.job_name,
        "run_id": run.run_id,
        "scheduled_at": iso(run.scheduled_at),
        "started_at": iso(run.started_at),
        "lateness_s": run.lateness_s,
        "origin": run.origin._value_,
        "instance": run.instance,
        "max_runtime_s": run.max_runtime,
    }


class SentryHook:
    """Per-run isolation scope, tags and exactly-once exception capture (on the job's path)."""

    name = "sentry"

    def enter(self, run: Run) -> object:
        if not sentry_enabled():
            return None
        manager = sentry_sdk.isolation_scope()
        scope = manager.__enter__()
        try:
            scope.set_tag("job_id", run.job_id)
            scope.set_tag("run_id", run.run_id)
            scope.set_tag("job_status", Status.RUNNING.value)
            scope.set_transaction_name(run.job_name, source="task")
            scope.set_context("job", _job_context(run))
            if run.trace_id is not None and run.span_id is not None:
                traceparent = f"{run.trace_id}-{run.span_id}"
                scope.generate_propagation_context({"sentry-trace": traceparent})
            else:
                scope.set_new_propagation_context()  # its own trace, not the request's
        except BaseException:
            manager.__exit__(None, None, None)
            raise
        return manager, scope

    def exit(self, run: Run, token: object, status: Status, error: BaseException | None) -> None:
        if token is None:
            return
        scope: sentry_sdk.Scope = token[1]  # type: ignore[index]
        try:
            scope.set_tag("job_status", status.value)
            if status in _REPORTED:
                context = _job_context(run)
                context["duration_s"] = run.elapsed_s
                context["status"] = status.value
                scope.set_context("job", context)
                reported = reported_error(status, error)
                if reported is not None:
                    sentry_sdk.capture_exception(reported)
                else:  # timed out and returned, or cancelled by the watchdog
                    limit = f" of {run.max_runtime:g} s" if run.max_runtime else ""
                    sentry_sdk.capture_message(
                        f'Job "{run.job_name}" ran past its max_runtime{limit}', level="error"
                    )
        finally:
            _forget_run(scope)
            self.release(run, token)

    def release(self, run: Run, token: object) -> None:
        """Leave the run's isolation scope, where it is still the current one. Only there: the
        hub may close a run from another thread (shutdown), whose scopes are not ours to
        reset; the job's thread then calls this when the job returns."""
        if token is None:
            return
        manager: AbstractContextManager[sentry_sdk.Scope]
        scope: sentry_sdk.Scope
        manager, scope = token  # type: ignore[misc]
        if sentry_sdk.get_isolation_scope() is scope:
            manager.__exit__(None, None, None)


def _forget_run(scope: sentry_sdk.Scope) -> None:
    """Take the ended run's tags and context off its scope. Contexts copied while it ran (a
    task it started, APScheduler's asyncio timer chain woken by an ``add_job()`` in the job)
    still have this scope current, for good: events sent from there must not carry the run."""
    for tag in ("job_id", "run_id", "job_status"):
        scope.remove_tag(tag)
    scope.remove_context("job")
    scope.set_new_propagation_context()


def capture_untracked_failure(job: Any, job_id: str, exc_info: ExcInfo) -> None:
    """Send the exception of a job not decorated with ``@tracked_job`` (no run scope saw it).

    Called on the job's thread, from APScheduler's own "raised an exception" log record
    (which is then dropped, so Sentry's logging integration does not send it again).
    """
    if not sentry_enabled():
        return
    with sentry_sdk.isolation_scope() as scope:
        scope.set_new_propagation_context()
        scope.set_tag("job_id", job_id)
        scope.set_tag("job_status", Status.FAILED.value)
        scope.set_transaction_name(getattr(job, "name", job_id), source="task")
        scope.set_context("job", {"job_id": job_id, "job_name": getattr(job, "name", job_id)})
        sentry_sdk.capture_exception(exc_info)
