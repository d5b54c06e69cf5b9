"""Where alerts go: Slack, a JSON webhook, email, Sentry, the log."""

from .email import EmailChannel
from .log import LogChannel
from .sentry import SentryChannel
from .slack import SlackChannel
from .webhook import WebhookChannel, sign, verify_signature

__all__ = [
    "EmailChannel",
    "LogChannel",
    "SentryChannel",
    "SlackChannel",
    "WebhookChannel",
    "sign",
    "verify_signature",
]
