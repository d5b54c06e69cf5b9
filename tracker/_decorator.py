"""``@tracked_job``: records every call of a job function as a run, measured inside the run."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _context
from ._record import Origin
from ._run import Run

if TYPE_CHECKING:
    from ._hub import Hub

P = ParamSpec("P")
R = TypeVar("R")

OPTIONS_ATTR = "__tracker_options__"
_get_current = _context._current.get
_set_current = _context._current.set
_new_run = object.__new__
_perf_counter = time.perf_counter
_time = time.time


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Per-job options given to :func:`tracked_job`."""

    max_runtime: float | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    name: str = ""
    """The function's qualified name: the job id and name of direct calls."""


def _checked_max_runtime(value: object) -> float | None:
    """``value`` if it can be a ``max_runtime``: ``None``, or a finite number of seconds above 0.

    Raises :class:`TypeError` for anything not a number (``"300"``, ``True``) and
    :class:`ValueError` for 0, a negative number, NaN or infinity: the watchdog would fail on
    every look at the run, or call every run ``timed_out``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"max_runtime must be a number of seconds or None, got {type(value).__name__} {value!r}"
        )
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"max_runtime must be a finite number of seconds above 0, got {value!r}")
    return value if isinstance(value, int | float) else seconds


def job_options(func: object) -> JobOptions | None:
    """The options of a tracked function (looking through ``partial`` and ``__wrapped__``)."""
    seen = 0
    while func is not None and seen < 8:
        options = getattr(func, OPTIONS_ATTR, None)
        if isinstance(options, JobOptions):
            return options
        func = (
            getattr(func, "func", None)
            if isinstance(func, functools.partial)
            else getattr(func, "__wrapped__", None)
        )
        seen += 1
    return None


def is_tracked(func: object) -> bool:
    """Whether ``func`` is (or wraps) a :func:`tracked_job` function."""
    return job_options(func) is not None


def _begin(wrapper: Callable[..., object], options: JobOptions) -> Run | None:
    """Open the run ``wrapper`` is being called for (``None``: untracked); never raises."""
    try:
        outer = _get_current()
        if outer is not None and outer.ended:  # in a context copied while it ran (Run.ended)
            outer = None
        dispatch = _context.resolve(wrapper)
        if outer is not None and _within(outer, dispatch, options.name):
            return None  # the function called itself: the inner calls are part of its run
        if dispatch is None:
            # A call inside a run goes to that run's tracker (else: the most recent one).
            hub = outer.hub if outer is not None and outer.hub is not None else None
            hub = hub or _context.default_hub()
            if hub is None or hub.closed:
                return None
            run = hub.begin(
                options.name,
                options.name,
                None,
                Origin.DIRECT,
                options.tags,
                options.max_runtime,
                None,
            )
        else:
            hub, job_id, job_name, scheduled_at, origin, more_tags, max_runtime, extras = dispatch
            hub = hub or _context.default_hub()
            if hub is None or hub._closed:
                return None
            tags = options.tags
            if more_tags:
                tags = {**tags, **more_tags}
            if max_runtime is None:
                max_runtime = options.max_runtime
            if extras:
                run = hub.begin(job_id, job_name, scheduled_at, origin, tags, max_runtime, extras)
            else:  # what hub.begin() does then, with fewer calls (the job's own path)
                run = _new_run(Run)  # Run.__init__'s work, spelled out: a third of its cost
                run._t0 = _perf_counter()
                run._wall0 = _time()
                run.job_id = job_id
                run.job_name = job_name
                run._scheduled_at = scheduled_at
                run.instance = hub.instance
                run.origin = origin
                if tags:
                    run.tags = tags
                if max_runtime is not None:
                    run.max_runtime = max_runtime
                run.hub = hub
                if hub._hooks:
                    hub.enter_hooks(run)
                hub._live[run] = run
        # set(), not a reset() token kept until the end: the token would outlive most runs
        # (queued with them), one more object per run for the garbage collector.
        if outer is not None:
            run.outer = outer
        _set_current(run)
        return run
    except Exception as exc:  # tracking must never stop the job
        hub = _context.default_hub()
        if hub is not None:
            hub.report_error("tracked_job", exc)
        return None


def _within(run: Run | None, dispatch: _context.Dispatch | None, name: str) -> bool:
    """Whether this call is recursion: ``run``, or a run it is nested in, still in progress,
    is this function's run. Either the scheduler called the job's function once and it called
    itself (the frames above still show the scheduler's call: ``dispatch`` is that run's), or
    it was called directly and called itself (a direct run of the function ``name``)."""
    while run is not None:
        if not run.ended:
            if dispatch is None:
                if run.origin is Origin.DIRECT and run.job_id == name:
                    return True
            elif (  # (by position: a resolver may give a plain tuple in Dispatch's order)
                run.job_id == dispatch[1]
                and run._scheduled_at is not None
                and run._scheduled_at == dispatch[3]
            ):
                return True
        run = run.outer
    return False


def _end(run: Run, error: BaseException | None) -> None:
    """Close the run opened by :func:`_begin`; never raises. (The wrappers spell it out where
    the job returned: one call fewer on every run's path.)"""
    _set_current(run.outer)
    run.hub.finish(run, error)  # type: ignore[union-attr]  # (_begin set it)


def _wrap(fn: Callable[P, R], options: JobOptions) -> Callable[P, R]:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    options = JobOptions(max_runtime=options.max_runtime, tags=options.tags, name=name)
    if inspect.iscoroutinefunction(fn):
        async_fn: Callable[P, Coroutine[Any, Any, Any]] = fn

        @functools.wraps(fn)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            run = _begin(async_wrapper, options)
            if run is None:
                return await async_fn(*args, **kwargs)
            try:
                result = await async_fn(*args, **kwargs)
            except BaseException as exc:
                _end(run, exc)
                raise
            _set_current(run.outer)
            run.hub.finish(run)  # type: ignore[union-attr]
            return result

        setattr(async_wrapper, OPTIONS_ATTR, options)
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        run = _begin(wrapper, options)
        if run is None:
            return fn(*args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _end(run, exc)
            raise
        _set_current(run.outer)
        hub: Hub = run.hub  # type: ignore[assignment]  # (_begin set it)
        if run._entered is None and run._release is None:  # no hook: hub.finish(), spelled out
            duration = _perf_counter() - run._t0
            run.ended = True
            if hub._live.pop(run, None) is not None:  # (else closed meanwhile, at shutdown)
                run.duration = duration
                hub._finished.append(run)
                if hub._closed:  # nobody will drain it
                    hub.drain_late()
        else:
            hub.finish(run)
        return result

    setattr(wrapper, OPTIONS_ATTR, options)
    return wrapper


@overload
def tracked_job(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def tracked_job(
    *, max_runtime: float | None = None, tags: Mapping[str, str] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def tracked_job(
    fn: Callable[P, R] | None = None,
    /,
    *,
    max_runtime: float | None = None,
    tags: Mapping[str, str] | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Record every run of the decorated job function, measured inside the run.

    Use bare (``@tracked_job``) or with options (``@tracked_job(max_runtime=300,
    tags={"team": "billing"})``), on sync or ``async def`` functions. The wrapper keeps
    the function's module, name and ``__qualname__``, so APScheduler's persistent job
    stores resolve their stored reference to the *tracked* function after a restart;
    an ``async def`` stays a coroutine function, so APScheduler still awaits it.

    Run by an instrumented scheduler, the run is attributed to its job and fire time.
    Called directly while a :class:`~tracker.Tracker` is open, the call is recorded as a
    run with origin ``direct``. With no tracker, the decorator is a pass-through. The
    job's own exception always propagates unchanged.

    :param max_runtime: seconds after which the run counts as ``timed_out``: a finite
        number above 0 (else :class:`TypeError` or :class:`ValueError`, here), or ``None``.
    :param tags: string labels stored with every run of this job.
    """
    options = JobOptions(
        max_runtime=_checked_max_runtime(max_runtime),
        tags=MappingProxyType({str(k): str(v) for k, v in (tags or {}).items()}),
    )
    if fn is not None:
        return _wrap(fn, options)

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        return _wrap(func, options)

    return decorate
