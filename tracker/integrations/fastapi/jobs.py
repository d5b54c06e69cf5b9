"""What the API says about a job: its schedule from the scheduler, its record from history."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from ..._decorator import job_options
from ..._record import Status
from ...sinks.database import select_executions
from ...sinks.database.rows import stored_job_id
from ...sinks.database.schema import executions
from .schedules import describe_trigger
from .schemas import JobOut, JobStats, RunSummary, TriggerOut

_RAN = (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.INTERRUPTED)
_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"


def sendable(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD, as the history stores it: a job id made by
    ``os.fsdecode`` may hold one, and no JSON response (UTF-8) can carry it."""
    return text if text.isascii() else _SURROGATE.sub(_REPLACEMENT, text)


def next_run_at(job: Any) -> datetime | None:
    """The job's next fire time in UTC (``None`` when paused, or not computed yet); in its own
    offset if it has no UTC form (past the year 9999), so one such job never fails a listing."""
    value: datetime | None = getattr(job, "next_run_time", None)
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return value


def is_paused(job: Any) -> bool:
    """Paused: the scheduler is running it without a next fire time."""
    return hasattr(job, "next_run_time") and job.next_run_time is None


def job_state(job: Any) -> dict[str, Any]:
    """The parts of a job a management action can change, for the audit trail."""
    kind, text = describe_trigger(job.trigger)
    nxt = next_run_at(job)
    return {
        "name": sendable(job.name),
        "trigger_type": kind,
        "trigger": sendable(text),
        "next_run_at": nxt.isoformat() if nxt is not None else None,
        "paused": is_paused(job),
    }


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def job_stats(engine: Engine, job_id: str, window: int) -> JobStats:
    """Success rate and p50/p95 duration over the job's last ``window`` finished runs."""
    t = executions
    query = (
        select(t.c.status, t.c.duration_s, t.c.scheduled_at)
        .where(t.c.job_id == stored_job_id(job_id), t.c.status != Status.RUNNING.value)
        .order_by(t.c.scheduled_at.desc(), t.c.run_id.desc())
        .limit(window)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    by_status: dict[str, int] = {}
    durations: list[float] = []
    last_success: datetime | None = None
    for status, duration, scheduled_at in rows:
        by_status[status] = by_status.get(status, 0) + 1
        if status in _RAN and duration is not None:
            durations.append(float(duration))
        if status == Status.SUCCEEDED.value and last_success is None:
            last_success = scheduled_at
    ran = sum(by_status.get(s.value, 0) for s in _RAN)
    durations.sort()
    return JobStats(
        window=window,
        runs=len(rows),
        by_status=by_status,
        success_rate=by_status.get(Status.SUCCEEDED.value, 0) / ran if ran else None,
        duration_p50_s=percentile(durations, 0.50),
        duration_p95_s=percentile(durations, 0.95),
        last_success_at=last_success,
    )


def job_out(job: Any, engine: Engine, window: int, *, history: bool = True) -> JobOut:
    """The full view of ``job``: schedule, options, last run and recent figures.

    With ``history=False`` the database is not read (last run and figures are empty).
    """
    kind, text = describe_trigger(job.trigger)
    options = job_options(job.func)
    last = select_executions(engine, job_id=job.id, limit=1) if history else []
    stats = (
        job_stats(engine, job.id, window)
        if history
        else JobStats(
            window=window,
            runs=0,
            by_status={},
            success_rate=None,
            duration_p50_s=None,
            duration_p95_s=None,
            last_success_at=None,
        )
    )
    grace = job.misfire_grace_time
    return JobOut(
        id=sendable(job.id),
        name=sendable(job.name),
        trigger=TriggerOut(type=kind, description=sendable(text)),
        next_run_at=next_run_at(job),
        paused=is_paused(job),
        func=sendable(
            str(getattr(job, "func_ref", None) or getattr(job.func, "__qualname__", job.func))
        ),
        executor=job.executor,
        max_instances=job.max_instances,
        coalesce=job.coalesce,
        misfire_grace_time=float(grace) if grace is not None else None,
        tracked=options is not None,
        max_runtime=options.max_runtime if options else None,
        tags=dict(options.tags) if options else {},
        last_run=RunSummary.of(last[0]) if last else None,
        stats=stats,
    )
