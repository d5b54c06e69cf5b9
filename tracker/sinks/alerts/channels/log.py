"""The log channel: every alert as one log record (the default when nothing else is set)."""

from __future__ import annotations

import logging

from ..model import Alert, Severity

LEVELS = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.ERROR: logging.ERROR,
    Severity.CRITICAL: logging.CRITICAL,
}


class LogChannel:
    """Logs each alert on ``logger`` (default ``tracker.alerts``) at its severity's level.

    The record carries the webhook payload as ``extra={"alert": {...}}`` for structured
    handlers.
    """

    def __init__(
        self, *, name: str = "log", logger: str | logging.Logger = "tracker.alerts"
    ) -> None:
        self.name = name
        self.logger = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)

    def send(self, alert: Alert) -> None:
        self.logger.log(
            LEVELS[alert.severity],
            "[%s] %s (job %s, alert %s)",
            alert.severity.value.upper(),
            alert.title,
            alert.job_id,
            alert.id,
            extra={"alert": alert.to_payload()},
        )

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"LogChannel(name={self.name!r})"
