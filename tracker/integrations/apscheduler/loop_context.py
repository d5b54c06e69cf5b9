"""An ``AsyncIOScheduler``'s wake-ups in the context it was started in, not the caller's.

``AsyncIOScheduler.wakeup()`` hands the scheduler's work to the event loop with
``call_soon_threadsafe``, which runs it in a copy of the *caller's* context; the timer it
then sets (``call_later``) copies that again, and every job task it creates
(``create_task``) too. So ``add_job()`` or ``modify_job()`` called from an HTTP request, or
from a running job, makes every later run of every job start in a copy of that request's or
that run's context: its structlog context variables (a ``request_id``), its Sentry scopes
(the request's user and tags on the job's errors, or tags a run set on the next runs).

:func:`run_wakeups_in` makes the scheduler's wake-ups run in a fresh copy of one context —
the one its ``start()`` (or the tracker's ``instrument()``, on a running scheduler) ran in —
so each job task starts from that, whoever woke the scheduler. Only a scheduler whose
``wakeup`` is APScheduler's own is changed (an instance attribute, removed by
:func:`restore_wakeups`).
"""

from __future__ import annotations

import contextvars
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

_ORIGINAL = AsyncIOScheduler.wakeup
_PROCESS = getattr(_ORIGINAL, "__wrapped__", None)
"""APScheduler's ``wakeup`` without its ``run_in_event_loop`` decorator."""
_MARK = "__tracker_wakeup__"


def run_wakeups_in(scheduler: Any, context: contextvars.Context) -> bool:
    """Run ``scheduler``'s wake-ups in a copy of ``context`` from now on (again: the newer
    context). ``False`` (nothing changed) for anything but an ``AsyncIOScheduler`` whose
    ``wakeup`` is APScheduler's own."""
    if (
        _PROCESS is None
        or not isinstance(scheduler, AsyncIOScheduler)
        or type(scheduler).wakeup is not _ORIGINAL
    ):
        return False

    def wakeup() -> None:
        # As APScheduler's run_in_event_loop does, with the context given.
        scheduler._eventloop.call_soon_threadsafe(_PROCESS, scheduler, context=context.copy())

    setattr(wakeup, _MARK, True)
    scheduler.wakeup = wakeup
    return True


def restore_wakeups(scheduler: Any) -> None:
    """Undo :func:`run_wakeups_in` (the scheduler's own ``wakeup`` again)."""
    if getattr(scheduler.__dict__.get("wakeup"), _MARK, False):
        del scheduler.wakeup
