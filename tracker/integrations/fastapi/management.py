"""Job routes: list, inspect, run now, pause, resume, reschedule, remove; every action audited."""

import logging
import threading
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from apscheduler.jobstores.base import JobLookupError
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status
from sqlalchemy.exc import SQLAlchemyError

from ..._exceptions import InvalidScheduleError
from ..._tracker import Tracker
from ..apscheduler import instrumentation_for
from ..apscheduler.instrument import RunsInProgress
from .audit import AuditEntry, AuditLog
from .common import (
    AUTH_ERRORS,
    CONFLICT,
    INVALID,
    NOT_FOUND,
    NOT_RUNNING,
    JobId,
    Wiring,
    db_read,
    page_limit,
    unprocessable,
)
from .filters import (
    decode_cursor,
    encode_cursor,
)
from .jobs import is_paused, job_out, job_state, sendable
from .schedules import cron_trigger, date_trigger, interval_trigger, resolve_timezone
from .schemas import (
    ActionOut,
    CronSchedule,
    DateSchedule,
    IntervalSchedule,
    JobOut,
    JobPage,
    Schedule,
)

logger = logging.getLogger("tracker.api")


def add_job_routes(router: APIRouter, wiring: Wiring) -> None:
    """Add ``/jobs`` and the management actions on ``/jobs/{id}``."""
    settings = wiring.settings
    # Actions that read a job's state, then change it (pause, resume, a new schedule) take
    # turns: a pause landing between a schedule change's read and its write was undone by it.
    changing = threading.Lock()
    Ctx = Annotated[tuple[Tracker, Any], Depends(wiring.bound)]
    protected = [Depends(wiring.authorize)]
    Actor = Annotated[str, Depends(wiring.authorize)]

    def audit(
        tracker: Tracker,
        request: Request,
        actor: str,
        action: str,
        job_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        detail: str | None = None,
    ) -> int | None:
        entry = AuditEntry(
            actor=actor,
            action=action,
            job_id=job_id,
            before=before,
            after=after,
            detail=detail,
            client=request.client.host if request.client else None,
        )
        try:
            return AuditLog(tracker.engine).write(entry)
        except SQLAlchemyError as exc:
            logger.error("tracker could not write the audit entry %r: %s", entry, exc)
            return None

    def not_found(job_id: str) -> HTTPException:
        return HTTPException(status.HTTP_404_NOT_FOUND, f"No job by the id of {job_id!r} was found")

    def get_job(scheduler: Any, job_id: str) -> Any:
        job = scheduler.get_job(job_id)
        if job is None and not scheduler.running:
            # A stopped APScheduler finds no jobs at all: say why instead of "not found".
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, NOT_RUNNING)
        if job is None:
            raise not_found(job_id)
        return job

    def done(
        tracker: Tracker,
        request: Request,
        actor: str,
        action: Literal["run", "pause", "resume", "reschedule"],
        job: Any,
        before: dict[str, Any],
        *,
        changed: bool,
        detail: str | None = None,
        manual_job_id: str | None = None,
    ) -> ActionOut:
        """Audit an action that happened and describe the job after it."""
        after = job_state(job)
        audit_id = audit(tracker, request, actor, action, job.id, before, after, detail)
        return ActionOut(
            action=action,
            job_id=sendable(job.id),
            changed=changed,
            job=after_view(tracker, job),
            manual_job_id=sendable(manual_job_id) if manual_job_id is not None else None,
            audit_id=audit_id,
        )

    def view(tracker: Tracker, job: Any) -> JobOut:
        return db_read(lambda: job_out(job, tracker.engine, settings.stats_window))

    def after_view(tracker: Tracker, job: Any) -> JobOut:
        """The job after an action: the action happened, so a history read error is no 503."""
        try:
            return job_out(job, tracker.engine, settings.stats_window)
        except SQLAlchemyError:
            return job_out(job, tracker.engine, settings.stats_window, history=False)

    def must_run(scheduler: Any) -> None:
        """A stopped APScheduler lists no jobs and finds none: say so, as a 503."""
        if not scheduler.running:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, NOT_RUNNING)

    def fire_time_left(job: Any) -> bool:
        """Whether resuming gives ``job`` a fire time from now on: a ``date`` trigger gives
        its run time even once it has passed, and APScheduler would then drop the job."""
        now = datetime.now(UTC)
        nxt = job.trigger.get_next_fire_time(None, now)
        return nxt is not None and nxt >= now

    def manual_origin(scheduler: Any, job_id: str) -> str | None:
        inst = instrumentation_for(scheduler)
        return inst.manual_origin(job_id) if inst is not None else None

    # -- jobs ---------------------------------------------------------------------------

    @router.get(
        "/jobs",
        tags=["jobs"],
        summary="List jobs",
        operation_id="tracker_list_jobs",
        response_model=JobPage,
        responses={**AUTH_ERRORS, **INVALID},
        dependencies=protected,
    )
    def list_jobs(
        ctx: Ctx,
        limit: Annotated[int | None, Query(description="Page size.")] = None,
        cursor: Annotated[
            str | None, Query(description="next_cursor of the previous page.")
        ] = None,
    ) -> JobPage:
        """Every job (by id), with its schedule, last run and recent figures."""
        tracker, scheduler = ctx
        must_run(scheduler)
        size = page_limit(limit, settings)
        after = None
        if cursor is not None:
            try:
                after = str(decode_cursor(cursor, (str,))[0])
            except ValueError as exc:
                raise unprocessable(str(exc)) from None
        jobs = sorted(
            (j for j in scheduler.get_jobs() if manual_origin(scheduler, j.id) is None),
            key=lambda j: j.id,
        )
        if after is not None:
            jobs = [j for j in jobs if j.id > after]
        page = jobs[:size]
        more = len(jobs) > size
        return JobPage(
            items=[view(tracker, job) for job in page],
            next_cursor=encode_cursor(page[-1].id) if more and page else None,
        )

    @router.get(
        "/jobs/{job_id:path}",
        tags=["jobs"],
        summary="One job",
        operation_id="tracker_get_job",
        response_model=JobOut,
        responses={**AUTH_ERRORS, **NOT_FOUND},
        dependencies=protected,
    )
    def read_job(ctx: Ctx, job_id: JobId) -> JobOut:
        """Trigger, next run, paused, last run and its status, success rate, p50/p95 duration."""
        tracker, scheduler = ctx
        return view(tracker, get_job(scheduler, job_id))

    @router.post(
        "/jobs/{job_id:path}/run",
        tags=["jobs"],
        summary="Run a job now",
        operation_id="tracker_run_job",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ActionOut,
        responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    def run_job(ctx: Ctx, actor: Actor, request: Request, job_id: JobId) -> ActionOut:
        """Run once now (a one-shot copy), recorded as origin manual; the schedule is untouched."""
        tracker, scheduler = ctx
        job = get_job(scheduler, job_id)
        must_run(scheduler)
        state = job_state(job)
        try:
            manual_id = tracker.instrument(scheduler).run_now(job_id)
        except JobLookupError:
            raise not_found(job_id) from None
        except RunsInProgress as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"Job {job_id!r} has {exc.going} run(s) in progress (max_instances="
                f"{exc.max_instances}): not started again; try when it has finished",
            ) from None
        return done(
            tracker,
            request,
            actor,
            "run",
            job,
            state,
            changed=True,
            detail=f"manual run as one-shot job {manual_id}",
            manual_job_id=manual_id,
        )

    def pause_or_resume(
        ctx: tuple[Tracker, Any], actor: str, request: Request, job_id: str, pause: bool
    ) -> ActionOut:
        tracker, scheduler = ctx
        action: Literal["pause", "resume"] = "pause" if pause else "resume"
        with changing:
            job = get_job(scheduler, job_id)
            before = job_state(job)
            changed = is_paused(job) != pause
            try:
                if changed and pause:
                    job = scheduler.pause_job(job_id)
                elif changed:
                    if not fire_time_left(job):
                        raise HTTPException(
                            status.HTTP_409_CONFLICT,
                            f"Job {job_id!r} has no fire time left: resuming would remove it "
                            "(give it a new schedule with PUT /jobs/{id}/schedule)",
                        )
                    job = scheduler.resume_job(job_id)
            except JobLookupError:
                raise not_found(job_id) from None
            job = get_job(scheduler, job_id)
        return done(tracker, request, actor, action, job, before, changed=changed)

    @router.post(
        "/jobs/{job_id:path}/pause",
        tags=["jobs"],
        summary="Pause a job",
        operation_id="tracker_pause_job",
        response_model=ActionOut,
        responses={**AUTH_ERRORS, **NOT_FOUND},
    )
    def pause_job(ctx: Ctx, actor: Actor, request: Request, job_id: JobId) -> ActionOut:
        """Stop firing the job until it is resumed (a no-op, still audited, if already paused)."""
        return pause_or_resume(ctx, actor, request, job_id, pause=True)

    @router.post(
        "/jobs/{job_id:path}/resume",
        tags=["jobs"],
        summary="Resume a job",
        operation_id="tracker_resume_job",
        response_model=ActionOut,
        responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    def resume_job(ctx: Ctx, actor: Actor, request: Request, job_id: JobId) -> ActionOut:
        """Fire the job again from its next fire time after now."""
        return pause_or_resume(ctx, actor, request, job_id, pause=False)

    @router.put(
        "/jobs/{job_id:path}/schedule",
        tags=["jobs"],
        summary="Change a job's schedule",
        operation_id="tracker_reschedule_job",
        response_model=ActionOut,
        responses={**AUTH_ERRORS, **NOT_FOUND, **INVALID},
    )
    def reschedule_job(
        ctx: Ctx,
        actor: Actor,
        request: Request,
        job_id: JobId,
        schedule: Annotated[
            Schedule,
            Body(
                openapi_examples={
                    "cron": {
                        "summary": "Weekdays at 09:00 Paris time",
                        "value": {
                            "type": "cron",
                            "expression": "0 9 * * 1-5",
                            "timezone": "Europe/Paris",
                        },
                    },
                    "cron6": {
                        "summary": "Every 30 s (6 fields, seconds first)",
                        "value": {"type": "cron", "expression": "*/30 * * * * *"},
                    },
                    "interval": {
                        "summary": "Every 90 minutes",
                        "value": {"type": "interval", "hours": 1, "minutes": 30},
                    },
                    "date": {
                        "summary": "Once",
                        "value": {"type": "date", "run_at": "2030-01-01T09:00:00+01:00"},
                    },
                }
            ),
        ],
    ) -> ActionOut:
        """Replace the trigger (cron of 5/6 fields, interval, date). A paused job stays paused."""
        tracker, scheduler = ctx
        job = get_job(scheduler, job_id)
        try:
            tz = resolve_timezone(schedule.timezone, scheduler.timezone)
            if isinstance(schedule, CronSchedule):
                trigger: Any = cron_trigger(schedule.expression, tz)
            elif isinstance(schedule, IntervalSchedule):
                trigger = interval_trigger(
                    weeks=schedule.weeks,
                    days=schedule.days,
                    hours=schedule.hours,
                    minutes=schedule.minutes,
                    seconds=schedule.seconds,
                    start_date=schedule.start_date,
                    end_date=schedule.end_date,
                    timezone=tz,
                    min_interval=settings.min_interval,
                )
            else:
                assert isinstance(schedule, DateSchedule)
                trigger = date_trigger(schedule.run_at, tz)
        except InvalidScheduleError as exc:
            raise unprocessable(str(exc)) from None
        with changing:
            job = get_job(scheduler, job_id)  # (again: a pause may have come meanwhile)
            before = job_state(job)
            try:
                if is_paused(job):
                    scheduler.modify_job(job_id, trigger=trigger)
                else:
                    scheduler.reschedule_job(job_id, trigger=trigger)
            except JobLookupError:
                raise not_found(job_id) from None
            job = get_job(scheduler, job_id)
        changed = before != job_state(job)
        return done(tracker, request, actor, "reschedule", job, before, changed=changed)

    @router.delete(
        "/jobs/{job_id:path}",
        tags=["jobs"],
        summary="Remove a job",
        operation_id="tracker_remove_job",
        response_model=ActionOut,
        responses={**AUTH_ERRORS, **NOT_FOUND},
    )
    def remove_job(ctx: Ctx, actor: Actor, request: Request, job_id: JobId) -> ActionOut:
        """Remove the job from its scheduler. Its run history stays."""
        tracker, scheduler = ctx
        job = get_job(scheduler, job_id)
        before = job_state(job)
        try:
            scheduler.remove_job(job_id)
        except JobLookupError:
            raise not_found(job_id) from None
        audit_id = audit(tracker, request, actor, "remove", job_id, before, None)
        return ActionOut(
            action="remove", job_id=sendable(job_id), changed=True, job=None, audit_id=audit_id
        )
