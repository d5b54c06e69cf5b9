"""Human-readable alert content shared by the Slack and email channels."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..model import Alert, AlertKind, Severity
from .base import error_summary

ICONS = {
    Severity.INFO: "✅",
    Severity.WARNING: "⚠️",
    Severity.ERROR: "🔴",
    Severity.CRITICAL: "🚨",
}

HEADLINES = {
    AlertKind.FAILED: "Job failing",
    AlertKind.TIMED_OUT: "Job stuck past its max runtime",
    AlertKind.MISSED: "Job missed a run",
    AlertKind.VANISHED: "Job vanished",
    AlertKind.RECOVERED: "Job recovered",
}


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def duration(seconds: float) -> str:
    """``3.2 s``, ``4 min 10 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    delta = timedelta(seconds=round(seconds))
    days, rest = delta.days, delta.seconds
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


def headline(alert: Alert) -> str:
    text = HEADLINES[alert.kind]
    return f"Still down — {text.lower()}" if alert.reminder else text


def job_label(alert: Alert) -> str:
    if alert.job_name == alert.job_id:
        return alert.job_name
    return f"{alert.job_name} (id {alert.job_id})"


def fields(alert: Alert) -> list[tuple[str, str]]:
    """(label, value) pairs: what a person needs to act on the alert."""
    rows = [("Job", job_label(alert))]
    run = alert.run
    if alert.kind is AlertKind.RECOVERED:
        rows.append(("Status", f"up again (was {alert.cause.value if alert.cause else 'down'})"))
    else:
        rows.append(("Status", alert.kind.value.replace("_", " ")))
    rows.append(("When", when(alert.at)))
    if alert.down_since is not None and alert.kind is not AlertKind.VANISHED:
        rows.append(("Down since", when(alert.down_since)))
    if alert.consecutive_failures:
        rows.append(("Failures in a row", str(alert.consecutive_failures)))
    if alert.failure_ratio is not None:
        rows.append(("Failure ratio", f"{alert.failure_ratio:.0%}"))
    if run is not None:
        if run.scheduled_at is not None:
            rows.append(("Fire time", when(run.scheduled_at)))
        if run.duration_s is not None:
            rows.append(("Duration", duration(run.duration_s)))
        error = error_summary(run.error_type, run.error_message)
        if error and alert.kind is not AlertKind.RECOVERED:
            rows.append(("Error", error))
        rows.append(("Run", run.run_id))
    if alert.max_runtime is not None:
        rows.append(("Max runtime", duration(alert.max_runtime)))
    if alert.detail:
        rows.append(("Detail", alert.detail))
    if alert.instance:
        rows.append(("Instance", alert.instance))
    return rows
