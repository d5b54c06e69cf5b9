"""Monitoring routes: ``GET /metrics`` and ``GET /health``."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.responses import JSONResponse

from ..._tracker import Tracker
from ...sinks.metrics import CONTENT_TYPE
from .common import (
    AUTH_ERRORS,
    Wiring,
)
from .schemas import (
    DatabaseHealth,
    ErrorOut,
    HealthOut,
    RecordsHealth,
    SchedulerHealth,
)


def add_monitoring_routes(router: APIRouter, wiring: Wiring) -> None:
    """Add ``/metrics`` and ``/health`` (open unless protect_metrics / protect_health)."""
    settings = wiring.settings
    Ctx = Annotated[tuple[Tracker, Any], Depends(wiring.bound)]
    protected = [Depends(wiring.authorize)]

    # -- monitoring ---------------------------------------------------------------------

    @router.get(
        "/metrics",
        tags=["monitoring"],
        summary="Prometheus metrics",
        operation_id="tracker_metrics",
        response_class=Response,
        dependencies=protected if settings.protect_metrics else [],
        responses={
            200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"},
            404: {"model": ErrorOut, "description": "Metrics are turned off"},
            **(AUTH_ERRORS if settings.protect_metrics else {}),
        },
    )
    def metrics(ctx: Ctx) -> Response:
        """Every job's series, rendered in a worker thread (never on the event loop)."""
        tracker, _ = ctx
        sink = getattr(tracker, "metrics", None)
        if sink is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "Metrics are turned off on this tracker")
        return Response(content=sink.render(), media_type=CONTENT_TYPE)

    @router.get(
        "/health",
        tags=["monitoring"],
        summary="Scheduler running, database writable, records pending",
        operation_id="tracker_health",
        response_model=HealthOut,
        dependencies=protected if settings.protect_health else [],
        responses={
            503: {"model": HealthOut, "description": "Unhealthy: see reasons"},
            **(
                {k: v for k, v in AUTH_ERRORS.items() if k != 503}
                if settings.protect_health
                else {}
            ),
        },
    )
    def health(ctx: Ctx) -> Any:
        """200 when the scheduler runs and the database takes writes; else 503 with the reasons."""
        tracker, scheduler = ctx
        from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

        state = {STATE_RUNNING: "running", STATE_PAUSED: "paused"}.get(scheduler.state, "stopped")
        stats = tracker.stats()
        database = tracker.database
        reasons: list[str] = []
        if state == "stopped":
            reasons.append("the scheduler is not running")
        if tracker.hub.closed:
            reasons.append("the tracker is closed")
        if not database.healthy:
            reasons.append(
                f"the database is not writable: {database.last_error or 'not ready yet'}"
            )
        try:
            jobs = len(scheduler.get_jobs())
        except Exception as exc:
            jobs = 0
            reasons.append(f"the scheduler's job store cannot be read: {type(exc).__name__}: {exc}")
        body = HealthOut(
            status="unhealthy" if reasons else "ok",
            reasons=reasons,
            scheduler=SchedulerHealth(state=state, jobs=jobs),  # type: ignore[arg-type]
            database=DatabaseHealth(
                healthy=database.healthy,
                last_error=database.last_error,
                last_write_at=database.last_write_at,
                pending=database.pending,
            ),
            records=RecordsHealth(
                pending=stats.pending,
                dropped=dict(stats.dropped),
                sink_errors=dict(stats.sink_errors),
                live_runs=stats.live_runs,
            ),
        )
        if reasons:
            return JSONResponse(body.model_dump(mode="json"), status.HTTP_503_SERVICE_UNAVAILABLE)
        return body
