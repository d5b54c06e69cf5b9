"""Sentry: each alert as a Sentry message, when the application initialised sentry-sdk.

Grouped by job and kind (``fingerprint``), tagged ``job``, ``job_id``, ``alert_kind``
and ``severity``, with the webhook payload as the ``tracker_alert`` context. When
sentry-sdk is missing or not initialised, the channel is inactive and alerts to it are
counted as ``skipped``.
"""

from __future__ import annotations

from typing import Any

from ..model import Alert, Severity

LEVELS = {
    Severity.INFO: "info",
    Severity.WARNING: "warning",
    Severity.ERROR: "error",
    Severity.CRITICAL: "fatal",
}


def _sdk() -> Any:
    try:
        import sentry_sdk
    except ImportError:
        return None
    return sentry_sdk


class SentryChannel:
    """Sends alerts through the application's own sentry-sdk client (no DSN of its own)."""

    def __init__(self, *, name: str = "sentry") -> None:
        self.name = name

    @property
    def active(self) -> bool:
        """Whether sentry-sdk is installed and initialised with a DSN."""
        sdk = _sdk()
        return sdk is not None and bool(sdk.get_client().is_active())

    def send(self, alert: Alert) -> None:
        sdk = _sdk()
        if sdk is None:
            return
        with sdk.new_scope() as scope:
            scope.set_level(LEVELS[alert.severity])
            scope.set_tag("job", alert.job_name)
            scope.set_tag("job_id", alert.job_id)
            scope.set_tag("alert_kind", alert.kind.value)
            scope.set_tag("severity", alert.severity.value)
            if alert.run is not None:
                scope.set_tag("run_id", alert.run.run_id)
            scope.fingerprint = ["tracker-alert", alert.job_id, alert.kind.value]
            scope.set_context("tracker_alert", alert.to_payload())
            sdk.capture_message(alert.title, level=LEVELS[alert.severity])

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"SentryChannel(name={self.name!r})"
