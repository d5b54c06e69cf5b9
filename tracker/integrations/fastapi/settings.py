"""Settings of the HTTP API, read from ``TRACKER_API_*`` environment variables or given in code."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from ...settings import Settings


class ApiSettings(Settings):
    """How the router authenticates and pages.

    Every field has an environment variable: ``TRACKER_API_TOKEN``,
    ``TRACKER_API_TOKENS`` (JSON object ``{"name": "token"}``),
    ``TRACKER_API_PROTECT_METRICS``, ...
    """

    model_config = SettingsConfigDict(
        env_prefix="TRACKER_API_", extra="ignore", allow_inf_nan=False
    )

    token: SecretStr | None = Field(
        default=None,
        description="Bearer token for the management and history endpoints. "
        "Requests using it are audited as actor `api`.",
    )
    tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="More bearer tokens, by the name recorded as the actor in the audit trail.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="With no token configured, serve the management and history endpoints to "
        "anybody (actor `anonymous`). For local demos only; without it they answer 503.",
    )
    protect_metrics: bool = Field(default=False, description="Require a token for /metrics.")
    protect_health: bool = Field(default=False, description="Require a token for /health.")
    stats_window: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="How many recent finished runs a job's success rate and p50/p95 cover.",
    )
    page_size: int = Field(default=50, ge=1, le=1000, description="Default page size.")
    max_page_size: int = Field(default=1000, ge=1, le=10_000, description="Largest page served.")
    min_interval: float = Field(
        default=1.0,
        gt=0,
        description="Shortest interval (seconds) PUT /jobs/{id}/schedule accepts.",
    )

    def configured_tokens(self) -> dict[str, str]:
        """Actor name → token, for every token configured."""
        found = {name: secret.get_secret_value() for name, secret in self.tokens.items()}
        if self.token is not None:
            found["api"] = self.token.get_secret_value()
        return {name: value for name, value in found.items() if value}
