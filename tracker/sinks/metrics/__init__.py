"""Prometheus metrics of every job, by job name, and of the tracker itself.

See ``docs/metrics.md`` for every metric, its labels and example PromQL.
"""

from .families import DEFAULT_DURATION_BUCKETS, DEFAULT_LATENESS_BUCKETS
from .settings import MetricsSettings
from .sink import HealthSource, MetricsSink, render
from .text import CONTENT_TYPE

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_DURATION_BUCKETS",
    "DEFAULT_LATENESS_BUCKETS",
    "HealthSource",
    "MetricsSettings",
    "MetricsSink",
    "render",
]
