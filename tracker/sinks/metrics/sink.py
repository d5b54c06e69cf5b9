"""The metrics sink: job series by name, kept current on the sink's thread, rendered fast."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

from ..._hub import HubStats
from ..._sink import BaseSink, TrackerEvent
from .collector import Health, MetricsCollector, install, installed, rendering_others, uninstall
from .families import check_buckets
from .settings import MetricsSettings
from .state import JobValues, MetricsState, Seed
from .text import Templates, render_health, render_jobs

_CHUNK = 512
"""Events applied per lock hold, so a scrape never waits behind a whole batch."""


class HealthSource(Protocol):
    """What the sink reads the tracker's own health from (a :class:`~tracker._hub.Hub`)."""

    def stats(self) -> HubStats: ...


class MetricsSink(BaseSink):
    """Prometheus metrics of every job, by job name (see ``docs/metrics.md``).

    ::

        sink = MetricsSink(registry=CollectorRegistry(), duration_buckets=(1, 60, 3600))
        tracker = Tracker(sinks=[sink])      # the tracker binds its health to it
        body = sink.render()                 # bytes for GET /metrics (CONTENT_TYPE)

    A :class:`~tracker.Tracker` creates one (``metrics=True``, the default) on the global
    ``REGISTRY`` unless it is given one in ``sinks`` or ``metrics=False``. Events are
    applied on the sink's own thread; :meth:`render` and :meth:`count_alert` may be
    called from any thread.
    """

    name = "metrics"
    run_rows = True
    """Finished runs may come as run rows (``tracker._plain``): counted without a record."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        duration_buckets: Iterable[float] | None = None,
        lateness_buckets: Iterable[float] | None = None,
        removed_linger: float | None = None,
        settings: MetricsSettings | None = None,
        hub: HealthSource | None = None,
    ) -> None:
        settings = settings or MetricsSettings()
        self.registry = registry if registry is not None else REGISTRY
        self.duration_buckets = check_buckets(
            settings.duration_buckets if duration_buckets is None else duration_buckets,
            "duration buckets",
        )
        self.lateness_buckets = check_buckets(
            settings.lateness_buckets if lateness_buckets is None else lateness_buckets,
            "lateness buckets",
        )
        linger = settings.removed_linger if removed_linger is None else removed_linger
        self._templates = Templates(self.duration_buckets, self.lateness_buckets)
        self._state = MetricsState(
            duration_buckets=self.duration_buckets,
            lateness_buckets=self.lateness_buckets,
            removed_linger=max(0.0, linger),
            make_text=self._templates.for_job,
        )
        self._lock = threading.Lock()
        self._alerts: dict[tuple[str, str], int] = {}
        self._alerts_lock = threading.Lock()
        self._order: list[str] = []
        self._body = b""
        self._hub = hub
        self.collector = MetricsCollector(
            self._snapshot, self._health, self.duration_buckets, self.lateness_buckets
        )
        self.collector.owner = self
        install(self.collector, self.registry)

    def bind(self, hub: HealthSource) -> None:
        """Export ``hub``'s health (records pending and dropped, sink errors)."""
        self._hub = hub

    # -- the sink's thread -------------------------------------------------------------

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        state = self._state
        failure: Exception | None = None
        for start in range(0, len(events), _CHUNK):
            with self._lock:
                for event in events[start : start + _CHUNK]:
                    try:
                        state.apply(event)
                    except Exception as exc:  # one event must not keep the others out
                        failure = failure or exc
        with self._lock:
            state.expire()
        if failure is not None:
            raise failure  # counted and logged by the sink's worker

    def tick(self) -> None:
        with self._lock:
            self._state.expire()

    def flush(self, timeout: float) -> bool:
        self.tick()
        return True

    def close(self, timeout: float) -> None:
        """Stop exporting on the registry (a previous sink still open takes over)."""
        uninstall(self.collector, self.registry)

    # -- any thread --------------------------------------------------------------------

    def seed(self, seeds: Mapping[str, Seed]) -> None:
        """Start each job name's last success/failure and consecutive failures from what
        they were before this process started (:func:`~.seed.seed_from_history` reads them
        from the run history), so a restart does not reset them."""
        with self._lock:
            self._state.seed(seeds)

    def count_alert(self, channel: str, outcome: str, amount: int = 1) -> None:
        """Count an alert notification: ``jobtracker_alerts_total{channel,outcome}``.

        ``amount=0`` makes the series exist at 0 (call it for the channels you configure).
        """
        with self._alerts_lock:
            key = (channel, outcome)
            self._alerts[key] = self._alerts.get(key, 0) + amount

    def render(self) -> bytes:
        """``/metrics``: the registry's other collectors, then this sink's families.

        Text format 0.0.4 (see :data:`CONTENT_TYPE`). Only the jobs whose values changed
        since the last call are formatted again; the rest comes from a cache.
        """
        with rendering_others():
            others = generate_latest(self.registry)
        return others + self.render_own()

    def render_own(self) -> bytes:
        """This sink's families only (jobs, then the tracker's health)."""
        with self._lock:
            state = self._state
            state.expire()
            if state.dirty or state.structure_changed:
                jobs = state.jobs
                for name in state.dirty:
                    series = jobs.get(name)
                    if series is not None:
                        series.text.render(series)
                state.dirty.clear()
                if state.structure_changed:
                    self._order = sorted(jobs)
                    state.structure_changed = False
                self._body = _encode(render_jobs([jobs[n] for n in self._order]))
            body = self._body
        return body + _encode(render_health(*self._health()))

    # -- for the collector ---------------------------------------------------------------

    def _snapshot(self) -> list[tuple[str, JobValues]]:
        with self._lock:
            jobs = self._state.jobs
            return [(name, jobs[name].values()) for name in sorted(jobs)]

    def _health(self) -> Health:
        with self._alerts_lock:
            alerts = dict(self._alerts)
        hub = self._hub
        if hub is None:
            return None, None, {}, alerts
        stats = hub.stats()
        errors = {name: 0 for name in _sink_names(hub)}
        errors.update(stats.sink_errors)
        return stats.pending, sum(stats.dropped.values()), errors, alerts


def _encode(text: str) -> bytes:
    # a job name with a lone surrogate must not take the whole /metrics down
    return text.encode("utf-8", "replace")


def _sink_names(hub: HealthSource) -> list[str]:
    sinks = getattr(hub, "sinks", ())
    return [str(getattr(s, "name", "")) for s in sinks if getattr(s, "name", "")]


def render(registry: CollectorRegistry | None = None) -> bytes:
    """``/metrics`` of ``registry`` (default the global one): fast when a sink exports there."""
    registry = registry if registry is not None else REGISTRY
    collector = installed(registry)
    if collector is not None and isinstance(collector.owner, MetricsSink):
        return collector.owner.render()
    return generate_latest(registry)
