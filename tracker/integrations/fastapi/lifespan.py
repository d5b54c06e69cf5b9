"""Starting and stopping the scheduler with the app, and flushing the tracker on the way out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from ..._tracker import Tracker

logger = logging.getLogger("tracker.api")

_STOP_POLL_S = 0.01


@asynccontextmanager
async def scheduler_running(
    tracker: Tracker,
    scheduler: Any,
    *,
    setup: Callable[[Any], None] | None = None,
    wait: bool = True,
    close_tracker: bool = True,
    close_timeout: float = 10.0,
) -> AsyncIterator[None]:
    """Instrument and start ``scheduler`` for the duration of the block; then stop both.

    Use it inside your own lifespan::

        @asynccontextmanager
        async def lifespan(app):
            async with scheduler_running(tracker, scheduler, setup=register_jobs):
                yield

    :param setup: called with the scheduler before it starts (register your jobs here).
    :param wait: on the way out, let running jobs finish (``scheduler.shutdown(wait=...)``);
        runs still in progress when the tracker closes are recorded as ``interrupted``.
    :param close_tracker: close the tracker (flush every sink) after the scheduler stopped;
        otherwise only flush it.
    """
    tracker.instrument(scheduler)
    started = False
    try:
        if setup is not None:
            setup(scheduler)
        if not scheduler.running:
            scheduler.start()
            started = True
    except BaseException:
        if close_tracker:  # the app won't start: don't leave the tracker's threads behind
            await asyncio.to_thread(tracker.close, close_timeout)
        raise
    try:
        yield
    finally:
        if started:
            await _shutdown(scheduler, wait)
        if close_tracker:
            await asyncio.to_thread(tracker.close, close_timeout)
        elif not await asyncio.to_thread(tracker.flush, close_timeout):
            logger.error("tracker could not flush every record within %.1fs", close_timeout)


async def _shutdown(scheduler: Any, wait: bool) -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.schedulers.base import STATE_STOPPED

    if not scheduler.running:
        return
    if isinstance(scheduler, AsyncIOScheduler):
        if wait:
            await _let_async_runs_finish(scheduler)
        # AsyncIOScheduler stops on its loop (call_soon_threadsafe): let the loop do it.
        scheduler.shutdown(wait=wait)
        while scheduler.state != STATE_STOPPED:  # noqa: ASYNC110 - APScheduler has no awaitable
            await asyncio.sleep(_STOP_POLL_S)
    else:
        await asyncio.to_thread(scheduler.shutdown, wait)


async def _let_async_runs_finish(scheduler: Any) -> None:
    """``wait=True`` for an AsyncIOScheduler: APScheduler's asyncio executor cancels the runs
    in progress at shutdown whatever ``wait`` says (it can't wait: its shutdown is not a
    coroutine). Here, on the scheduler's loop, the scheduler is paused (no new run starts)
    and the runs in progress are awaited, before it is shut down."""
    if getattr(scheduler, "_eventloop", None) is not asyncio.get_running_loop():
        return  # its runs live on another loop: nothing to await from here
    scheduler.pause()
    while True:
        pending = [
            future
            for executor in list(getattr(scheduler, "_executors", {}).values())
            for future in list(getattr(executor, "_pending_futures", ()))
            if not future.done()
        ]
        if not pending:
            return
        await asyncio.wait(pending)


def tracker_lifespan(
    tracker: Tracker,
    scheduler: Any,
    *,
    setup: Callable[[Any], None] | None = None,
    wait: bool = True,
    close_tracker: bool = True,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan`` that runs ``scheduler`` (instrumented) and closes ``tracker``.

    ::

        app = FastAPI(lifespan=tracker_lifespan(tracker, scheduler, setup=register_jobs))
        app.include_router(tracker_router())

    It also puts both on ``app.state`` (``tracker``, ``scheduler``), where
    :func:`tracker_router` finds them when not given explicitly.
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        app.state.tracker = tracker
        app.state.scheduler = scheduler
        async with scheduler_running(
            tracker, scheduler, setup=setup, wait=wait, close_tracker=close_tracker
        ):
            yield

    return lifespan
