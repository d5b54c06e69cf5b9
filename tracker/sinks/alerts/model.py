"""What an alert is: its kind, severity and content, and its versioned JSON payload."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from ..._record import Execution

PAYLOAD_VERSION = 1
"""Version of the JSON payload (webhook body, stored flip). Fields are only ever added."""


class AlertKind(enum.StrEnum):
    """What happened to a job."""

    FAILED = "failed"
    """It failed ``after_failures`` times in a row, or too often over its window."""
    TIMED_OUT = "timed_out"
    """A run passed its ``max_runtime`` (sent at the deadline, while it still runs)."""
    MISSED = "missed"
    """A fire time passed without a run."""
    VANISHED = "vanished"
    """The job disappeared from its scheduler without being removed."""
    RECOVERED = "recovered"
    """It succeeded again (or came back) after an alert."""


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class JobHealth(enum.StrEnum):
    """The state a job is in, as far as alerting goes."""

    UP = "up"
    DOWN = "down"
    GONE = "gone"


DEFAULT_SEVERITIES: Mapping[AlertKind, Severity] = MappingProxyType(
    {
        AlertKind.FAILED: Severity.ERROR,
        AlertKind.TIMED_OUT: Severity.ERROR,
        AlertKind.MISSED: Severity.WARNING,
        AlertKind.VANISHED: Severity.CRITICAL,
        AlertKind.RECOVERED: Severity.INFO,
    }
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSummary:
    """The run an alert is about."""

    run_id: str
    status: str
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    error_type: str | None = None
    error_message: str | None = None

    @classmethod
    def from_execution(cls, e: Execution) -> RunSummary:
        return cls(
            run_id=e.run_id,
            status=e.status.value,
            scheduled_at=e.scheduled_at,
            started_at=e.started_at,
            finished_at=e.finished_at,
            duration_s=e.duration_s,
            error_type=e.error_type,
            error_message=e.error_message,
        )

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "status": self.status,
            "scheduled_at": _iso(self.scheduled_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_s": self.duration_s,
            "error_type": self.error_type,
            "error_message": self.error_message,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> RunSummary:
        return cls(
            run_id=str(data["id"]),
            status=str(data["status"]),
            scheduled_at=_time(data.get("scheduled_at")),
            started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")),
            duration_s=data.get("duration_s"),
            error_type=data.get("error_type"),
            error_message=data.get("error_message"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Alert:
    """One notification: a job changed state (or is still down, for a reminder).

    ``id`` is the id of the state change (the flip): the same for every channel and
    every retry, so receivers can drop duplicates with it.
    """

    id: str
    kind: AlertKind
    severity: Severity
    job_id: str
    job_name: str
    state: JobHealth
    previous_state: JobHealth
    at: datetime
    summary: str
    """One line, for a title or a subject."""
    detail: str | None = None
    """More text: why a job vanished, how a fire time was missed..."""
    reminder: bool = False
    """Sent again because the job is still down after ``renotify_after``."""
    cause: AlertKind | None = None
    """For a recovery or a reminder: what the job was down for."""
    down_since: datetime | None = None
    consecutive_failures: int = 0
    failure_ratio: float | None = None
    max_runtime: float | None = None
    run: RunSummary | None = None
    instance: str = ""
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def title(self) -> str:
        """``summary`` with a prefix for reminders."""
        return f"Still down: {self.summary}" if self.reminder else self.summary

    def to_payload(self) -> dict[str, Any]:
        """The JSON document the webhook channel posts (see ``docs/alerts.md``)."""
        return {
            "version": PAYLOAD_VERSION,
            "id": self.id,
            "kind": self.kind.value,
            "severity": self.severity.value,
            "state": self.state.value,
            "previous_state": self.previous_state.value,
            "reminder": self.reminder,
            "cause": self.cause.value if self.cause is not None else None,
            "summary": self.summary,
            "detail": self.detail,
            "at": _iso(self.at),
            "down_since": _iso(self.down_since),
            "job": {"id": self.job_id, "name": self.job_name, "tags": dict(self.tags)},
            "run": self.run.to_payload() if self.run is not None else None,
            "consecutive_failures": self.consecutive_failures,
            "failure_ratio": self.failure_ratio,
            "max_runtime": self.max_runtime,
            "instance": self.instance,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Alert:
        """Rebuild an alert from :meth:`to_payload` (as stored with its flip)."""
        job = data["job"]
        run = data.get("run")
        cause = data.get("cause")
        at = _time(data.get("at"))
        if at is None:
            raise ValueError("alert payload without 'at'")
        return cls(
            id=str(data["id"]),
            kind=AlertKind(data["kind"]),
            severity=Severity(data["severity"]),
            job_id=str(job["id"]),
            job_name=str(job["name"]),
            state=JobHealth(data["state"]),
            previous_state=JobHealth(data["previous_state"]),
            at=at,
            summary=str(data["summary"]),
            detail=data.get("detail"),
            reminder=bool(data.get("reminder", False)),
            cause=AlertKind(cause) if cause else None,
            down_since=_time(data.get("down_since")),
            consecutive_failures=int(data.get("consecutive_failures") or 0),
            failure_ratio=data.get("failure_ratio"),
            max_runtime=data.get("max_runtime"),
            run=RunSummary.from_payload(run) if run else None,
            instance=str(data.get("instance") or ""),
            tags=MappingProxyType(dict(job.get("tags") or {})),
        )
