"""Alert settings from the environment (``TRACKER_ALERT_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from ..._exceptions import ConfigurationError
from ...settings import Settings
from .channels import EmailChannel, LogChannel, SentryChannel, SlackChannel, WebhookChannel
from .delivery import Channel


class AlertSettings(Settings):
    """Every setting has a ``TRACKER_ALERT_`` environment variable, e.g.
    ``TRACKER_ALERT_SLACK_URL``. Setting any channel turns alerts on."""

    model_config = SettingsConfigDict(
        env_prefix="TRACKER_ALERT_", extra="ignore", allow_inf_nan=False
    )

    enabled: bool | None = Field(
        default=None,
        description="Alerts on/off; unset: on when a channel is configured here.",
    )
    # channels
    slack_url: str | None = Field(default=None, description="Slack incoming webhook URL.")
    webhook_url: str | None = Field(default=None, description="URL the JSON payload is POSTed to.")
    webhook_secret: SecretStr | None = Field(
        default=None, description="Shared secret: sign webhook bodies (X-Tracker-Signature)."
    )
    smtp_host: str | None = Field(default=None, description="SMTP server for email alerts.")
    smtp_port: int | None = Field(
        default=None, description="Default 25, 587 with STARTTLS, 465 with SSL."
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(default=False, description="Upgrade the connection with STARTTLS.")
    smtp_ssl: bool = Field(default=False, description="Implicit TLS (SMTPS).")
    email_from: str | None = Field(default=None, description="Sender address.")
    email_to: str | None = Field(default=None, description="Recipients, comma-separated.")
    sentry: bool = Field(
        default=False, description="Send alerts to Sentry (if sentry-sdk is initialised)."
    )
    log: bool = Field(default=True, description="Also log every alert (logger tracker.alerts).")
    timeout: float = Field(default=10.0, gt=0, description="Seconds per delivery attempt.")
    # policy
    after_failures: int = Field(
        default=1, ge=1, description="Alert after this many failures in a row."
    )
    failure_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Alert when this share of the last `window` runs failed.",
    )
    window: int = Field(default=10, ge=1, le=100)
    renotify_after: float | None = Field(
        default=None, gt=0, description="Seconds after which a job still down is alerted again."
    )
    recovery: bool = Field(default=True, description="Send a notice when a job recovers.")
    # delivery
    max_attempts: int = Field(default=5, ge=1, description="Attempts per alert and channel.")
    backoff: float = Field(default=1.0, gt=0, description="First retry delay (doubles each time).")
    max_backoff: float = Field(default=60.0, gt=0)
    queue_size: int = Field(default=1000, ge=1, description="Alerts waiting per channel.")
    shutdown_timeout: float = Field(
        default=5.0, ge=0, description="Seconds pending alerts get to go out at shutdown."
    )

    @property
    def configured(self) -> bool:
        """Whether a channel other than the log is set (or half set: a webhook secret alone
        must be an error, not alerts silently off)."""
        return bool(
            self.slack_url
            or self.webhook_url
            or self.webhook_secret
            or self.smtp_host
            or self.email_to
            or self.sentry
        )

    @property
    def active(self) -> bool:
        return self.enabled if self.enabled is not None else self.configured

    def channels(self) -> list[Channel]:
        """The channels these settings describe. Raises :class:`ConfigurationError`."""
        channels: list[Channel] = []
        if self.slack_url is not None:
            channels.append(SlackChannel(self.slack_url, timeout=self.timeout))
        if self.webhook_url is not None:
            secret = self.webhook_secret.get_secret_value() if self.webhook_secret else None
            channels.append(WebhookChannel(self.webhook_url, secret=secret, timeout=self.timeout))
        elif self.webhook_secret is not None:
            raise ConfigurationError(
                "TRACKER_ALERT_WEBHOOK_SECRET is set but TRACKER_ALERT_WEBHOOK_URL is not"
            )
        if self.smtp_host is not None or self.email_to is not None:
            channels.append(
                EmailChannel(
                    self.smtp_host,
                    port=self.smtp_port,
                    sender=self.email_from,
                    recipients=self.email_to or "",
                    username=self.smtp_username,
                    password=self.smtp_password.get_secret_value() if self.smtp_password else None,
                    starttls=self.smtp_starttls,
                    ssl=self.smtp_ssl,
                    timeout=self.timeout,
                )
            )
        if self.sentry:
            channels.append(SentryChannel())
        if self.log or not channels:
            channels.append(LogChannel())
        return channels
