"""The prometheus-client side: a custom collector, and one of them per registry.

:class:`MetricsCollector` makes the sink's series visible to anything that reads the
registry (``generate_latest``, ``make_asgi_app``, a push gateway). The fast
:meth:`MetricsSink.render` path renders them itself and asks the registry only for the
*other* collectors' families: while it does, :func:`rendering_others` makes every
``MetricsCollector`` on this thread yield nothing.

A registry holds at most one ``MetricsCollector``: installing a second one (a second
tracker on the same registry, a test that builds trackers in a loop) replaces the first
instead of raising ``Duplicated timeseries``; when the newer one is closed, the previous
one still open is exported again.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from .families import (
    ALERTS,
    DURATION,
    GAUGES,
    HEALTH_FAMILIES,
    JOB_FAMILIES,
    LATENESS,
    RECORDS_DROPPED,
    RECORDS_PENDING,
    RUN_STATUSES,
    RUNS,
    SINK_ERRORS,
    Family,
)
from .state import JobValues
from .text import go_float

Health = tuple[int | None, int | None, dict[str, int], dict[tuple[str, str], int]]
"""(records pending, records dropped, sink errors by sink, alerts by (channel, outcome))."""

_local = threading.local()
_installed: weakref.WeakKeyDictionary[CollectorRegistry, list[MetricsCollector]] = (
    weakref.WeakKeyDictionary()
)
_install_lock = threading.Lock()


@contextmanager
def rendering_others() -> Iterator[None]:
    """While active (on this thread), metrics collectors yield nothing."""
    previous = getattr(_local, "skip", False)
    _local.skip = True
    try:
        yield
    finally:
        _local.skip = previous


class MetricsCollector:
    """A prometheus-client collector over a metrics sink's state."""

    def __init__(
        self,
        snapshot: Callable[[], list[tuple[str, JobValues]]],
        health: Callable[[], Health],
        duration_buckets: tuple[float, ...],
        lateness_buckets: tuple[float, ...],
    ) -> None:
        self._snapshot = snapshot
        self.owner: object = None
        """The sink this collector exports (set by the sink)."""
        self._health = health
        self._duration_les = [go_float(b) for b in duration_buckets] + ["+Inf"]
        self._lateness_les = [go_float(b) for b in lateness_buckets] + ["+Inf"]

    def describe(self) -> list[Metric]:
        return [_empty(f) for f in (*JOB_FAMILIES, *HEALTH_FAMILIES)]

    def collect(self) -> Iterable[Metric]:
        if getattr(_local, "skip", False):
            return []
        runs = CounterMetricFamily(RUNS.name, RUNS.help, labels=("job", "status"))
        duration = HistogramMetricFamily(DURATION.name, DURATION.help, labels=("job",))
        lateness = HistogramMetricFamily(LATENESS.name, LATENESS.help, labels=("job",))
        gauges = [GaugeMetricFamily(f.name, f.help, labels=("job",)) for f in GAUGES]
        for name, v in self._snapshot():
            for status, count in zip(RUN_STATUSES, v.runs, strict=True):
                runs.add_metric([name, status.value], count)
            duration.add_metric(
                [name], list(zip(self._duration_les, v.duration, strict=True)), v.duration_sum
            )
            lateness.add_metric(
                [name], list(zip(self._lateness_les, v.lateness, strict=True)), v.lateness_sum
            )
            values = (
                v.in_progress, v.last_success, v.last_failure, v.next_run,
                v.consecutive_failures, v.paused,
            )  # fmt: skip
            for gauge, value in zip(gauges, values, strict=True):
                gauge.add_metric([name], value)
        metrics: list[Metric] = [runs, duration, lateness, *gauges]
        pending, dropped, sink_errors, alerts = self._health()
        if pending is not None:
            metrics.append(GaugeMetricFamily(RECORDS_PENDING.name, RECORDS_PENDING.help, pending))
        if dropped is not None:
            metrics.append(CounterMetricFamily(RECORDS_DROPPED.name, RECORDS_DROPPED.help, dropped))
            errors = CounterMetricFamily(SINK_ERRORS.name, SINK_ERRORS.help, labels=("sink",))
            for sink, count in sorted(sink_errors.items()):
                errors.add_metric([sink], count)
            metrics.append(errors)
        sent = CounterMetricFamily(ALERTS.name, ALERTS.help, labels=("channel", "outcome"))
        for (channel, outcome), count in sorted(alerts.items()):
            sent.add_metric([channel, outcome], count)
        metrics.append(sent)
        return metrics


def _empty(family: Family) -> Metric:
    if family.type == "counter":
        return CounterMetricFamily(family.name, family.help)
    if family.type == "histogram":
        return HistogramMetricFamily(family.name, family.help)
    return GaugeMetricFamily(family.name, family.help)


def install(collector: MetricsCollector, registry: CollectorRegistry) -> None:
    """Register ``collector``, replacing the metrics collector already on ``registry``."""
    with _install_lock:
        stack = _installed.setdefault(registry, [])
        if stack:
            _unregister(registry, stack[-1])
        try:
            registry.register(collector)  # raises if the user registered the same names
        except ValueError:
            if stack:
                with suppress(ValueError):
                    registry.register(stack[-1])
            raise
        stack.append(collector)


def uninstall(collector: MetricsCollector, registry: CollectorRegistry) -> None:
    """Unregister ``collector``; the previous one still installed takes its place."""
    with _install_lock:
        stack = _installed.get(registry)
        if not stack or collector not in stack:
            return
        current = stack[-1] is collector
        stack.remove(collector)
        if current:
            _unregister(registry, collector)
            if stack:
                registry.register(stack[-1])


def installed(registry: CollectorRegistry) -> MetricsCollector | None:
    """The metrics collector exported by ``registry``, if any."""
    with _install_lock:
        stack = _installed.get(registry)
        return stack[-1] if stack else None


def _unregister(registry: CollectorRegistry, collector: MetricsCollector) -> None:
    with suppress(KeyError):  # somebody unregistered it already
        registry.unregister(collector)
