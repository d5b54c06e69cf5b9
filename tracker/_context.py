"""Where a run finds its tracker and its own identity.

* the current run (a ``ContextVar``), which a job reads with :func:`current_run`;
* the default hub, used when a tracked function is called outside any scheduler;
* resolvers, registered by scheduler integrations, that tell a tracked function
  which job and fire time it is running for (and which hub tracks that scheduler).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from ._record import Execution, Origin

if TYPE_CHECKING:
    from ._hub import Hub
    from ._run import Run

_current: ContextVar[Run | None] = ContextVar("tracker_current_run", default=None)
_default_hubs: list[Hub] = []


class Dispatch(NamedTuple):
    """What a scheduler integration knows about the run a tracked function is called for.

    A resolver may return a plain ``tuple`` of these fields, in this order, instead (the
    wrapper reads them by position; a plain tuple costs the run's path a third as much)."""

    hub: Hub | None
    job_id: str
    job_name: str
    scheduled_at: datetime | None
    origin: Origin = Origin.SCHEDULED
    tags: Mapping[str, str] | None = None
    max_runtime: float | None = None
    extras: Mapping[str, object] | None = None
    """What was carried from where the run was requested (see :func:`carry`); hooks read it
    from ``run.extras``."""


Resolver = Callable[[Callable[..., object]], "Dispatch | None"]
"""Given the tracked wrapper being called, the dispatch it runs under, or ``None``."""

_resolvers: list[Resolver] = []


def add_resolver(resolver: Resolver) -> None:
    """Register a scheduler integration's resolver (idempotent)."""
    global resolve
    if resolver not in _resolvers:
        _resolvers.append(resolver)
        # One integration (the usual case): the wrapper calls its resolver directly.
        resolve = _resolvers[0] if len(_resolvers) == 1 else _resolve_each


def _resolve_each(wrapper: Callable[..., object]) -> Dispatch | None:
    """Ask each registered integration which job and fire time ``wrapper`` runs for."""
    for resolver in _resolvers:
        dispatch = resolver(wrapper)
        if dispatch is not None:
            return dispatch
    return None


resolve: Resolver = _resolve_each
"""Which job and fire time ``wrapper`` runs for, by the registered integrations."""


_carriers: dict[str, Callable[[], object]] = {}


def add_carrier(name: str, capture: Callable[[], object]) -> None:
    """Have ``capture()`` called where a run is requested (``run_now``, in the caller's context).

    What it returns reaches the run's hooks as ``run.extras[name]``: the tracing hook
    uses it to link a manual run to the HTTP request that asked for it.
    """
    _carriers[name] = capture


def carry() -> dict[str, object] | None:
    """What every registered carrier captures now; ``None`` when there is none."""
    if not _carriers:
        return None
    carried: dict[str, object] = {}
    for name, capture in list(_carriers.items()):
        try:
            carried[name] = capture()
        except Exception:  # a carrier must never stop the request
            continue
    return carried


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
    return None if run is None or run.ended else run.snapshot()
