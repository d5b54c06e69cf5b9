"""FastAPI integration: ``/metrics``, ``/health``, job management, run history and the audit trail.

::

    from tracker.integrations.fastapi import tracker_lifespan, tracker_router

    app = FastAPI(lifespan=tracker_lifespan(tracker, scheduler))
    app.include_router(tracker_router(tracker, scheduler))

Needs the ``fastapi`` extra (``pip install 'tracker[fastapi]'``). The modules that do not
need FastAPI (``audit``, ``filters``, ``schedules``) can be imported without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .audit import AuditEntry, AuditLog
    from .lifespan import scheduler_running, tracker_lifespan
    from .router import tracker_router
    from .settings import ApiSettings

__all__ = [
    "ApiSettings",
    "AuditEntry",
    "AuditLog",
    "scheduler_running",
    "tracker_lifespan",
    "tracker_router",
]

_WHERE = {
    "ApiSettings": "settings",
    "AuditEntry": "audit",
    "AuditLog": "audit",
    "scheduler_running": "lifespan",
    "tracker_lifespan": "lifespan",
    "tracker_router": "router",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    try:
        return getattr(import_module(f"{__name__}.{module}"), name)
    except ImportError as exc:
        if exc.name in ("fastapi", "starlette", "uvicorn"):
            raise ImportError(
                f"tracker's FastAPI integration needs {exc.name}: pip install 'tracker[fastapi]'"
            ) from exc
        raise
