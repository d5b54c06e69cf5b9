"""Settings of the metrics sink, from code or ``TRACKER_METRICS_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from ...settings import Settings
from .families import DEFAULT_DURATION_BUCKETS, DEFAULT_LATENESS_BUCKETS, check_buckets


class MetricsSettings(Settings):
    """E.g. ``TRACKER_METRICS_DURATION_BUCKETS='[1, 10, 60, 600, 3600]'``."""

    # Not allow_inf_nan=False for the whole model: a bucket list may end in +Inf (dropped by
    # check_buckets, which refuses NaN); removed_linger is finite on its own.
    model_config = SettingsConfigDict(env_prefix="TRACKER_METRICS_", extra="ignore")

    duration_buckets: tuple[float, ...] = Field(
        default=DEFAULT_DURATION_BUCKETS,
        description="Upper bounds (seconds) of jobtracker_run_duration_seconds; +Inf is added.",
    )
    lateness_buckets: tuple[float, ...] = Field(
        default=DEFAULT_LATENESS_BUCKETS,
        description="Upper bounds (seconds) of jobtracker_run_lateness_seconds; +Inf is added.",
    )
    removed_linger: float = Field(
        default=300.0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds a removed job's series stay exported (so the last scrape sees its "
        "last run) before they go away.",
    )

    @field_validator("duration_buckets", "lateness_buckets")
    @classmethod
    def _valid_buckets(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return check_buckets(value, "histogram buckets")
