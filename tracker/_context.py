"""Where a run finds its tracker and its own identity.

* the current run (a ``ContextVar``), which a job reads with :func:`current_run`;
* the default hub, used when a tracked function is called outside any scheduler;
* resolvers, registered by scheduler integrations, that tell a tracked function
  which job and fire time it is running for (and which hub tracks that scheduler).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ._record import Execution, Origin

if TYPE_CHECKING:
    from ._hub import Hub
    from ._run import Run

_current: ContextVar[Run | None] = ContextVar("tracker_current_run", default=None)
_default_hubs: list[Hub] = []


@dataclass(frozen=True, slots=True)
class Dispatch:
    """What a scheduler integration knows about the run a tracked function is called for."""

    hub: Hub | None
    job_id: str
    job_name: str
    scheduled_at: datetime
    origin: Origin = Origin.SCHEDULED
    tags: Mapping[str, str] | None = None
    max_runtime: float | None = None


Resolver = Callable[[Callable[..., object]], "Dispatch | None"]
"""Given the tracked wrapper being called, the dispatch it runs under, or ``None``."""

_resolvers: list[Resolver] = []


def add_resolver(resolver: Resolver) -> None:
    """Register a scheduler integration's resolver (idempotent)."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def resolve(wrapper: Callable[..., object]) -> Dispatch | None:
    for resolver in _resolvers:
        dispatch = resolver(wrapper)
        if dispatch is not None:
            return dispatch
    return None


def push_default(hub: Hub) -> None:
    """Make ``hub`` the default (the most recently opened tracker wins)."""
    _default_hubs.append(hub)


def remove_default(hub: Hub) -> None:
    while hub in _default_hubs:
        _default_hubs.remove(hub)


def default_hub() -> Hub | None:
    """The hub of the most recently created tracker that is still open, if any."""
    return _default_hubs[-1] if _default_hubs else None


def current_run() -> Execution | None:
    """The run the calling code is part of, as a ``running`` record; ``None`` outside a run.

    Works inside a :func:`tracked_job` function (sync or async), including code it
    calls: ``current_run().run_id``, ``.job_id``, ``.scheduled_at``...
    """
    run = _current.get()
    return None if run is None else run.snapshot()


def current_run_state() -> Run | None:
    """The live :class:`~tracker._run.Run` object of the current run (for hooks and integrations)."""
    return _current.get()
