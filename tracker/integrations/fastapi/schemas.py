"""Request and response models of the HTTP API (they are its OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..._record import Execution, Origin, Status


class ErrorOut(BaseModel):
    """An error, said in one sentence."""

    detail: str = Field(examples=["No job by the id of 'nightly' was found"])


class ValidationErrorOut(BaseModel):
    """Invalid input: a sentence, or FastAPI's list of field errors for malformed requests."""

    detail: str | list[dict[str, Any]]


# -- schedules ----------------------------------------------------------------------------


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str | None = Field(
        default=None,
        description="IANA timezone name the schedule is read in; default the scheduler's.",
        examples=["Europe/Paris"],
    )


class CronSchedule(_Schedule):
    """A crontab expression: 5 fields, or 6 with seconds first. 0 and 7 are Sunday."""

    type: Literal["cron"]
    expression: str = Field(examples=["*/5 * * * *", "30 0 8 * * *", "0 9 * * 1-5", "@daily"])


class IntervalSchedule(_Schedule):
    """Every weeks + days + hours + minutes + seconds."""

    type: Literal["interval"]
    weeks: float = 0
    days: float = 0
    hours: float = 0
    minutes: float = 0
    seconds: float = 0
    start_date: datetime | None = Field(default=None, description="First fire time base.")
    end_date: datetime | None = Field(default=None, description="No fire times after this.")


class DateSchedule(_Schedule):
    """Once, at ``run_at`` (which must be in the future); the job is removed after it runs."""

    type: Literal["date"]
    run_at: datetime = Field(examples=["2030-01-01T09:00:00+01:00"])


Schedule = Annotated[CronSchedule | IntervalSchedule | DateSchedule, Field(discriminator="type")]


# -- jobs ---------------------------------------------------------------------------------


class TriggerOut(BaseModel):
    type: str = Field(description="cron, interval, date, or the trigger's class name.")
    description: str = Field(examples=["cron[month='*', day='*', hour='2', minute='0']"])


class RunSummary(BaseModel):
    """A run, without its traceback."""

    run_id: str
    job_id: str
    job_name: str
    status: Status
    scheduled_at: datetime = Field(description="The fire time that was due.")
    started_at: datetime | None = Field(description="The true start, measured inside the run.")
    finished_at: datetime | None
    duration_s: float | None
    lateness_s: float | None
    error_type: str | None
    error_message: str | None
    instance: str
    origin: Origin = Field(description="scheduled, manual (POST /jobs/{id}/run) or direct.")
    coalesced: int = Field(
        description="For a missed record made by coalescing: fire times it covers."
    )
    trace_id: str | None
    span_id: str | None
    tags: dict[str, str]

    @classmethod
    def of(cls, e: Execution) -> RunSummary:
        return cls(
            run_id=e.run_id,
            job_id=e.job_id,
            job_name=e.job_name,
            status=e.status,
            scheduled_at=e.scheduled_at,
            started_at=e.started_at,
            finished_at=e.finished_at,
            duration_s=e.duration_s,
            lateness_s=e.lateness_s,
            error_type=e.error_type,
            error_message=e.error_message,
            instance=e.instance,
            origin=e.origin,
            coalesced=e.coalesced,
            trace_id=e.trace_id,
            span_id=e.span_id,
            tags=dict(e.tags),
        )


class ExecutionOut(RunSummary):
    """A run with its traceback (bounded in size)."""

    traceback: str | None

    @classmethod
    def of(cls, e: Execution) -> ExecutionOut:
        return cls(**RunSummary.of(e).model_dump(), traceback=e.traceback)


class JobStats(BaseModel):
    """Figures over the job's most recent finished runs."""

    window: int = Field(description="How many recent finished runs were looked at (at most).")
    runs: int = Field(description="Finished runs found in the window.")
    by_status: dict[str, int]
    success_rate: float | None = Field(
        description="succeeded / (succeeded + failed + timed_out + interrupted); "
        "null when none of those is in the window. Missed and skipped fires are not runs."
    )
    duration_p50_s: float | None
    duration_p95_s: float | None
    last_success_at: datetime | None = Field(description="Fire time of the newest success.")


class JobOut(BaseModel):
    id: str
    name: str
    trigger: TriggerOut
    next_run_at: datetime | None = Field(description="Null when paused (or finished).")
    paused: bool
    func: str = Field(description="The job function's reference, module:qualname.")
    executor: str
    max_instances: int
    coalesce: bool
    misfire_grace_time: float | None
    tracked: bool = Field(description="Decorated with @tracked_job (true start measured in-run).")
    max_runtime: float | None
    tags: dict[str, str]
    last_run: RunSummary | None
    stats: JobStats


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )


class ActionOut(BaseModel):
    """What a management action did."""

    action: Literal["run", "pause", "resume", "reschedule", "remove"]
    job_id: str
    changed: bool = Field(description="False when the job already was in the state asked for.")
    job: JobOut | None = Field(description="The job afterwards (null once removed).")
    manual_job_id: str | None = Field(
        default=None,
        description="For run: the one-shot job that runs it; its run is recorded under job_id "
        "with origin manual.",
    )
    audit_id: int | None = Field(description="The audit entry, or null if it could not be written.")


# -- history ------------------------------------------------------------------------------


class ExecutionPage(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end."
    )


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="Name of the token used (api for TRACKER_API_TOKEN).")
    client: str | None = Field(description="Client address as the server saw it.")
    action: str
    job_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: str | None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


# -- health -------------------------------------------------------------------------------


class SchedulerHealth(BaseModel):
    state: Literal["running", "paused", "stopped"]
    jobs: int


class DatabaseHealth(BaseModel):
    healthy: bool = Field(description="Whether the last write (or heartbeat) succeeded.")
    last_error: str | None
    last_write_at: datetime | None
    pending: int = Field(description="Records waiting to be written.")


class RecordsHealth(BaseModel):
    pending: int = Field(description="Records accepted but not yet handled by every sink.")
    dropped: dict[str, int]
    sink_errors: dict[str, int]
    live_runs: int


class HealthOut(BaseModel):
    status: Literal["ok", "unhealthy"]
    reasons: list[str] = Field(description="Why it is unhealthy; empty when ok.")
    scheduler: SchedulerHealth
    database: DatabaseHealth
    records: RecordsHealth
