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
from types import FrameType, MethodType
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
_getframe = sys._getframe

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
    # Above: the wrapper's _begin (and _context's loop over resolvers, if there are several),
    # the wrapper, then its caller: run_job when APScheduler called it. Asked for at once, only
    # that frame is made an object (the wrapper's is not).
    try:
        frame: FrameType | None = _getframe(3)
    except ValueError:  # (called from the top of the stack: no run_job above)
        return None
    depth = 1
    while frame is not None:
        code = frame.f_code
        if code is _RUN_JOB or code is _RUN_COROUTINE_JOB:
            break
        depth += 1
        frame = None if depth > _MAX_DEPTH else frame.f_back
    else:
        return None
    local = frame.f_locals  # the costliest step (about 0.5 µs): every local made a dict
    job = local.get("job")
    run_time = local.get("run_time")
    if job is None or run_time is None:
        return None
    func = job.func
    if func is not wrapper and not _calls(func, wrapper):
        return None
    # ``run_time`` is in the scheduler's time zone: the run converts it to UTC when asked.
    # Plain tuples in Dispatch's field order (a third of a Dispatch's cost: the wrapper reads
    # them by position).
    inst = instrumented.get(id(job._scheduler))
    if inst is None:
        return (None, job.id, job.name, run_time, _SCHEDULED, None, None, None)  # type: ignore[return-value]
    job_id = job.id
    if inst._manual:
        original = inst.manual_origin(job_id)
        if original is not None:
            extras = inst.carried(job_id)
            return (inst.hub, original, job.name, run_time, _MANUAL, None, None, extras)  # type: ignore[return-value]
    return (inst.hub, job_id, job.name, run_time, _SCHEDULED, None, None, None)  # type: ignore[return-value]
