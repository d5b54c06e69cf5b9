"""The demo service: an AsyncIOScheduler with the sample jobs, tracked, behind the HTTP API.

``tracker demo`` serves it with uvicorn; it also runs as
``uvicorn --factory tracker.demo.app:create_app`` (settings from ``TRACKER_*`` variables).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from .._sink import Sink
from .._tracker import Tracker
from ..integrations.fastapi.lifespan import scheduler_running
from ..integrations.fastapi.router import tracker_router
from ..integrations.fastapi.settings import ApiSettings
from . import jobs

BASE_PERIOD_S = 5.0
"""The shortest sample-job interval at scale 1; ``--fast`` makes it about 1 s."""
FAST_SCALE = 0.2


def register_jobs(scheduler: Any, scale: float = 1.0) -> None:
    """Add the sample jobs, their intervals and durations multiplied by ``scale``."""
    period = BASE_PERIOD_S * scale
    every = {"trigger": "interval", "replace_existing": True}
    scheduler.add_job(jobs.say_hello, seconds=period, id="say_hello", **every)
    scheduler.add_job(jobs.sync_inventory, seconds=period, id="sync_inventory", **every)
    scheduler.add_job(
        jobs.build_report,
        seconds=period,
        kwargs={"seconds": 2.4 * period},
        id="build_report",
        max_instances=1,
        **every,
    )
    scheduler.add_job(
        jobs.rebuild_search_index,
        seconds=3 * period,
        kwargs={"seconds": 2 * period},
        id="rebuild_search_index",
        executor="serial",
        **every,
    )
    scheduler.add_job(
        jobs.send_digest,
        seconds=period,
        id="send_digest",
        executor="serial",
        misfire_grace_time=1,
        max_instances=10,
        coalesce=False,
        **every,
    )
    scheduler.add_job(
        jobs.export_ledger,
        seconds=3 * period,
        kwargs={"seconds": max(1.5, 0.6 * period)},
        id="export_ledger",
        **every,
    )
    # As if the process had been down for three periods: the backlog is coalesced.
    scheduler.add_job(
        jobs.charge_invoices,
        seconds=period,
        id="charge_invoices",
        coalesce=True,
        next_run_time=datetime.now(UTC) - timedelta(seconds=3.5 * period),
        **every,
    )
    scheduler.add_job(
        jobs.nightly_cleanup,
        "cron",
        hour=2,
        minute=0,
        id="nightly_cleanup",
        replace_existing=True,
    )


def create_scheduler() -> AsyncIOScheduler:
    """The demo's scheduler, configured the way services usually do it."""
    return AsyncIOScheduler(
        timezone="UTC",
        executors={"default": AsyncIOExecutor(), "serial": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )


_OTEL_EXPORT_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def _tracing_from_env() -> dict[str, Any]:
    """Spans for every run, exported as the standard ``OTEL_*`` variables say.

    Only when one of them asks for an exporter: by default the demo sends nothing anywhere.
    Needs the ``tracing`` extra.
    """
    if not any(os.environ.get(name) for name in _OTEL_EXPORT_VARIABLES):
        return {}
    from ..sinks.tracing import configure_otlp_from_env

    return {
        "tracing": True,
        "tracer_provider": configure_otlp_from_env(service_name="tracker-demo"),
    }


def create_app(
    database_url: str | None = None,
    *,
    token: str | None = None,
    scale: float | None = None,
    sinks: Iterable[Sink] = (),
    registry: CollectorRegistry | None = None,
    on_ready: Callable[[Tracker], None] | None = None,
    on_stopped: Callable[[Tracker], None] | None = None,
) -> FastAPI:
    """The demo app. Unset options come from ``TRACKER_DATABASE_URL``, ``TRACKER_API_TOKEN``
    and ``TRACKER_DEMO_SCALE`` (interval multiplier, default 1; 0.2 fires about every second).

    :param on_ready: called once the scheduler runs (the CLI prints the URLs).
    :param on_stopped: called after the tracker is closed and flushed.
    """
    if scale is None:
        scale = float(os.environ.get("TRACKER_DEMO_SCALE", "1"))
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    tracker = Tracker(database_url, sinks=sinks, registry=registry, **_tracing_from_env())
    scheduler = create_scheduler()
    settings = ApiSettings(token=SecretStr(token)) if token else ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.tracker = tracker
        app.state.scheduler = scheduler
        jobs.STOP.clear()
        try:
            async with scheduler_running(
                tracker, scheduler, setup=lambda s: register_jobs(s, scale), wait=False
            ):
                if on_ready is not None:
                    on_ready(tracker)
                yield
        finally:
            jobs.STOP.set()  # runs in progress were recorded as interrupted; let them return
        if on_stopped is not None:
            on_stopped(tracker)

    app = FastAPI(
        title="tracker demo",
        summary="Sample APScheduler jobs, every run tracked.",
        description="Management and history endpoints need `Authorization: Bearer <token>` "
        "(the token `tracker demo` printed). /metrics and /health are open.",
        lifespan=lifespan,
    )
    app.include_router(tracker_router(tracker, scheduler, settings=settings))

    @app.get("/", include_in_schema=False)
    def index() -> dict[str, str]:
        return {
            "metrics": "/metrics",
            "health": "/health",
            "jobs": "/jobs",
            "executions": "/executions",
            "audit": "/audit",
            "docs": "/docs",
        }

    return app
