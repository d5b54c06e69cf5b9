"""Alerts: a policy on every record, state changes (flips) in the database, channels.

::

    from tracker import Tracker
    from tracker.sinks.alerts import AlertConfig, AlertPolicy, SlackChannel, WebhookChannel

    tracker = Tracker(alerts=AlertConfig(
        channels=[SlackChannel(slack_url), WebhookChannel(url, secret=secret)],
        policy=AlertPolicy(after_failures=3),
    ))

See ``docs/alerts.md``.
"""

from .channels import (
    EmailChannel,
    LogChannel,
    SentryChannel,
    SlackChannel,
    WebhookChannel,
    sign,
    verify_signature,
)
from .config import AlertConfig, resolve_alerts
from .delivery import Channel, DeliveryError
from .model import PAYLOAD_VERSION, Alert, AlertKind, JobHealth, RunSummary, Severity
from .policy import AlertPolicy
from .settings import AlertSettings
from .sink import AlertSink
from .state import alert_deliveries, alert_flips, alert_jobs

__all__ = [
    "PAYLOAD_VERSION",
    "Alert",
    "AlertConfig",
    "AlertKind",
    "AlertPolicy",
    "AlertSettings",
    "AlertSink",
    "Channel",
    "DeliveryError",
    "EmailChannel",
    "JobHealth",
    "LogChannel",
    "RunSummary",
    "SentryChannel",
    "Severity",
    "SlackChannel",
    "WebhookChannel",
    "alert_deliveries",
    "alert_flips",
    "alert_jobs",
    "resolve_alerts",
    "sign",
    "verify_signature",
]
