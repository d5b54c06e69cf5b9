"""Telling a :func:`tracked_job` wrapper which job and fire time it is running for.

APScheduler 3 calls ``job.func(*job.args, **job.kwargs)`` from ``run_job`` (threads)
or ``run_coroutine_job`` (asyncio), whose frames hold the ``job`` and the current
``run_time``. The wrapper looks a few frames up for one of them. That costs about a
microsecond, needs no change to APScheduler, works with every executor built on those
two functions (thread pool, asyncio, gevent, tornado, twisted, debug), and keeps the
stored job function the user's own (so persistent job stores keep working).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import MethodType
from typing import TYPE_CHECKING, Any

from apscheduler.executors.base import run_coroutine_job, run_job

from ..._context import Dispatch
from ..._record import Origin

if TYPE_CHECKING:
    from .instrument import SchedulerInstrumentation

# Compared by identity: hashing a code object (``in`` a set) costs more than the walk.
_RUN_JOB = run_job.__code__
_RUN_COROUTINE_JOB = run_coroutine_job.__code__
_MAX_DEPTH = 12
_SCHEDULED = Origin.SCHEDULED
_MANUAL = Origin.MANUAL
_tuple_new = tuple.__new__

instrumented: dict[int, SchedulerInstrumentation] = {}
"""Instrumentation by ``id(scheduler)``; entries are removed when detached."""


def _calls(func: Any, wrapper: Callable[..., object]) -> bool:
    """Whether calling ``func`` reaches ``wrapper`` (itself, a bound method of it, a partial, or
    a ``@wraps`` chain)."""
    for _ in range(8):
        if func is wrapper:
            return True
        if isinstance(func, functools.partial):
            func = func.func
        elif isinstance(func, MethodType):  # its __wrapped__ would skip the wrapper
            func = func.__func__
        else:
            func = getattr(func, "__wrapped__", None)
            if func is None:
                return False
    return False


def resolve_apscheduler(wrapper: Callable[..., object]) -> Dispatch | None:
    """The job and fire time ``wrapper`` is being run for by APScheduler, if it is."""
    # Above: the wrapper's _begin (and _context's loop over resolvers, if there are several).
    frame = sys._getframe(2)
    for _ in range(_MAX_DEPTH):
        code = frame.f_code
        if code is _RUN_JOB or code is _RUN_COROUTINE_JOB:
            break
        back = frame.f_back
        if back is None:
            return None
        frame = back
    else:
        return None
    local = frame.f_locals
    job = local.get("job")
    run_time = local.get("run_time")
    if job is None or run_time is None:
        return None
    func = job.func
    if func is not wrapper and not _calls(func, wrapper):
        return None
    # ``run_time`` is in the scheduler's time zone: the run converts it to UTC when asked.
    hub = extras = None
    job_id = job.id
    origin = _SCHEDULED
    inst = instrumented.get(id(job._scheduler))
    if inst is not None:
        hub = inst.hub
        if inst._manual:
            original = inst.manual_origin(job_id)
            if original is not None:
                extras = inst.carried(job_id)
                job_id, origin = original, _MANUAL
    return _tuple_new(Dispatch, (hub, job_id, job.name, run_time, origin, None, None, extras))
