"""The watchdog: a run past its ``max_runtime`` is reported at the deadline, not at its end.

One daemon thread looks at the hub's live runs every ``interval`` seconds (0.25 by
default; sooner when a deadline is closer). It never touches the job's path: the job
only ever appends to a queue, and the watchdog reads the hub's list of live runs.

At the deadline of a run (its job's ``@tracked_job(max_runtime=...)``, else
``default_max_runtime``) the watchdog

* marks the run ``forced_status = timed_out``: when it ends, its record is closed as
  ``timed_out`` and keeps its real error, with a tag ``outcome`` saying how the job
  itself ended (``succeeded``, ``failed``, ``interrupted``);
* publishes a :class:`~tracker.RunTimedOut` notice (the alert sink turns it into a
  ``timed_out`` alert) and logs a warning;
* with ``cancel_async=True``, cancels the asyncio task of an ``async`` job run by a
  scheduler: on the task's loop, and only if that run is still going then (a run that
  blocks its loop ends before the loop can cancel anything, and the task may have gone on
  to the job's next fire time, which is left alone). A thread can't be stopped: a sync
  job keeps running.

Scheduler-aware checks (overdue fire times, vanished jobs) plug in with
:meth:`Watchdog.add_check`; see :mod:`tracker.integrations.apscheduler.watchdog`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Protocol

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ._exceptions import ConfigurationError
from ._hub import Hub
from ._record import Origin, RunTimedOut, Status
from ._run import Run
from .settings import Settings

logger = logging.getLogger("tracker.watchdog")

_TASK = "_watchdog_task"


class WatchdogSettings(Settings):
    """Every setting has a ``TRACKER_WATCHDOG_`` environment variable, e.g.
    ``TRACKER_WATCHDOG_DEFAULT_MAX_RUNTIME=3600``."""

    model_config = SettingsConfigDict(
        env_prefix="TRACKER_WATCHDOG_", extra="ignore", allow_inf_nan=False
    )

    enabled: bool = Field(default=True, description="Run the watchdog thread.")
    interval: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="Seconds between two looks at the runs in progress (and overdue jobs).",
    )
    default_max_runtime: float | None = Field(
        default=None,
        gt=0,
        description="max_runtime (seconds) of jobs that don't set one; unset: no limit.",
    )
    cancel_async: bool = Field(
        default=False,
        description="Cancel the asyncio task of an async job at its deadline.",
    )
    grace: float = Field(
        default=60.0,
        ge=0,
        description="Seconds after a fire time (or after the job's misfire_grace_time, if "
        "longer) before a fire time with no run is recorded as missed.",
    )
    vanish_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between two comparisons of known jobs with the scheduler's jobs.",
    )


class Check(Protocol):
    """A periodic check run on the watchdog's thread (it must be quick and not block)."""

    name: str

    def check(self, now: datetime) -> None: ...

    def close(self) -> None: ...


def resolve_settings(watchdog: WatchdogSettings | bool | None) -> WatchdogSettings | None:
    """The settings a :class:`~tracker.Tracker` runs its watchdog with; ``None`` when off."""
    if watchdog is False:
        return None
    if watchdog is None or watchdog is True:
        settings = WatchdogSettings()
        if watchdog is True and not settings.enabled:
            settings = settings.model_copy(update={"enabled": True})
    elif isinstance(watchdog, WatchdogSettings):
        settings = watchdog
    else:
        raise ConfigurationError(
            f"watchdog must be a WatchdogSettings, True or False, not {type(watchdog).__name__}"
        )
    return settings if settings.enabled else None


class _TaskHook:
    """Remembers the asyncio task of each scheduled async run, so it can be cancelled."""

    name = "watchdog"

    def enter(self, run: Run) -> object:
        if run.origin is Origin.DIRECT:  # a direct call runs in its caller's task: never cancel it
            return None
        # (asyncio's own no-raise lookup: get_running_loop() raises on every sync job's thread,
        # and an exception raised and caught costs the job's path about a microsecond)
        loop = asyncio._get_running_loop()
        if loop is None:  # a sync job on a worker thread
            return None
        task = asyncio.current_task(loop)
        if task is not None:
            run.extras[_TASK] = (loop, task)
        return None

    def exit(self, run: Run, token: object, status: Status, error: BaseException | None) -> None:
        extras = run._extras  # (not run.extras: a sync run has none, and needs none made)
        if extras:
            extras.pop(_TASK, None)


class Watchdog:
    """Reports runs that pass their deadline, and runs the scheduler checks, on one thread.

    ::

        watchdog = Watchdog(hub, WatchdogSettings(default_max_runtime=600))
        watchdog.start()
        ...
        watchdog.stop()

    A :class:`~tracker.Tracker` makes and starts one unless ``watchdog=False``.
    """

    def __init__(self, hub: Hub, settings: WatchdogSettings | None = None) -> None:
        self.hub = hub
        self.settings = settings or WatchdogSettings()
        self.interval = self.settings.interval
        self.default_max_runtime = self.settings.default_max_runtime
        self.cancel_async = self.settings.cancel_async
        self._checks: list[Check] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.timed_out = 0
        """Runs reported past their deadline so far."""
        if self.cancel_async:
            hub.add_hook(_TaskHook())

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="tracker-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and close every check."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for check in self._checks:
            try:
                check.close()
            except Exception as exc:
                self.hub.report_error("watchdog", exc)
        self._checks = []

    def add_check(self, check: Check) -> None:
        """Run ``check.check(now)`` on every pass from now on."""
        self._checks = [*self._checks, check]

    def remove_check(self, check: Check) -> None:
        self._checks = [c for c in self._checks if c is not check]
        check.close()

    @property
    def checks(self) -> list[Check]:
        return list(self._checks)

    # -- the thread ------------------------------------------------------------------

    def _loop(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                wait = self.check_runs()
            except Exception as exc:
                self.hub.report_error("watchdog", exc)
                wait = self.interval
            now = datetime.now(UTC)
            for check in self._checks:
                try:
                    check.check(now)
                except Exception as exc:
                    self.hub.report_error(f"watchdog:{check.name}", exc)

    def check_runs(self) -> float:
        """One look at the live runs: report those past their deadline.

        Returns how long to wait before the next look: ``interval``, or less when a
        deadline comes sooner.
        """
        wait = self.interval
        default = self.default_max_runtime
        for run in self.hub.live_runs():
            if run.forced_status is not None:
                continue
            limit = run.max_runtime if run.max_runtime is not None else default
            if limit is None:
                continue
            left = limit - run.elapsed_s
            if left > 0:
                wait = min(wait, left)
                continue
            if self.hub.is_live(run):  # (not one that ended since the list was taken)
                self._deadline(run, limit)
        return max(wait, 0.01)

    def _deadline(self, run: Run, limit: float) -> None:
        run.forced_status = Status.TIMED_OUT
        self.timed_out += 1
        cancelled = self._cancel(run, limit) if self.cancel_async else False
        logger.warning(
            "job %r (run %s) passed its max_runtime of %g s and is still running%s",
            run.job_id,
            run.run_id,
            limit,
            "; cancelling its task" if cancelled else "",
        )
        self.hub._publish(
            RunTimedOut(
                run=run.snapshot(),
                max_runtime=limit,
                detected_at=datetime.now(UTC),
                cancelled=cancelled,
            )
        )

    def _cancel(self, run: Run, limit: float) -> bool:
        target = run.extras.get(_TASK)
        if not isinstance(target, tuple):
            return False
        loop, task = target
        message = f"cancelled by the tracker watchdog: ran past its max_runtime of {limit:g} s"
        hub = self.hub

        def cancel() -> None:
            # On the loop, maybe much later (a run that blocks its loop holds this back).
            # The task may have ended this run meanwhile and gone on to another: APScheduler
            # runs several fire times of a job one after the other in one task. Cancel only
            # the run that passed its deadline, while it still runs.
            if hub.is_live(run) and run.extras.get(_TASK) is target:
                task.cancel(message)

        try:
            loop.call_soon_threadsafe(cancel)
        except RuntimeError:  # the loop is closed: the run is ending anyway
            return False
        return True
