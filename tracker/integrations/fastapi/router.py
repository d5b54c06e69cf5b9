"""The router a service includes in its own FastAPI app: metrics, health, jobs, history, audit.

::

    app = FastAPI(lifespan=tracker_lifespan(tracker, scheduler))
    app.include_router(tracker_router(tracker, scheduler))

Every endpoint that touches the database or the scheduler is a plain ``def``:
FastAPI runs it in its thread pool, so nothing here blocks the event loop.
"""

from typing import Any

from fastapi import APIRouter

from ..._tracker import Tracker
from .auth import Authenticator
from .common import Bound, EncodableErrorsRoute, Wiring
from .history import add_history_routes
from .management import add_job_routes
from .monitoring import add_monitoring_routes
from .settings import ApiSettings


def tracker_router(
    tracker: Tracker | None = None,
    scheduler: Any | None = None,
    *,
    settings: ApiSettings | None = None,
) -> APIRouter:
    """The tracker's HTTP API as a router to ``include_router`` in your app.

    :param tracker: the :class:`~tracker.Tracker`; default ``app.state.tracker``
        (set by :func:`tracker_lifespan`).
    :param scheduler: the APScheduler 3 scheduler it instruments; default
        ``app.state.scheduler``.
    :param settings: authentication and paging; default from ``TRACKER_API_*``.
    """
    settings = settings or ApiSettings()
    wiring = Wiring(
        settings=settings, authorize=Authenticator(settings), bound=Bound(tracker, scheduler)
    )
    router = APIRouter(route_class=EncodableErrorsRoute)
    add_monitoring_routes(router, wiring)
    add_job_routes(router, wiring)
    add_history_routes(router, wiring)
    return router
