"""History routes: ``/executions`` (run history) and ``/audit`` (the audit trail)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from ..._tracker import Tracker
from ...sinks.database import get_execution, select_executions
from ...sinks.database.schema import executions
from ...sinks.storable import storable_text
from .audit import AuditLog
from .common import (
    AUTH_ERRORS,
    INVALID,
    Wiring,
    db_read,
    page_limit,
    time_range,
    unprocessable,
)
from .filters import (
    decode_execution_cursor,
    decode_id_cursor,
    encode_cursor,
    execution_cursor,
    parse_statuses,
)
from .schemas import (
    AuditOut,
    AuditPage,
    ErrorOut,
    ExecutionOut,
    ExecutionPage,
    RunSummary,
)


def stored_run_id(run_id: str) -> str:
    """``run_id`` as the history holds it (see :func:`~tracker.sinks.storable.storable_text`):
    a NUL character, which PostgreSQL refuses even in a query, is looked up as U+FFFD."""
    length = getattr(executions.c.run_id.type, "length", None)
    return storable_text(run_id, length if isinstance(length, int) else None)


def add_history_routes(router: APIRouter, wiring: Wiring) -> None:
    """Add ``/executions``, ``/executions/{run_id}`` and ``/audit``."""
    settings = wiring.settings
    Ctx = Annotated[tuple[Tracker, Any], Depends(wiring.bound)]
    protected = [Depends(wiring.authorize)]

    # -- history ------------------------------------------------------------------------

    @router.get(
        "/executions",
        tags=["executions"],
        summary="Run history, newest first",
        operation_id="tracker_list_executions",
        response_model=ExecutionPage,
        responses={**AUTH_ERRORS, **INVALID},
        dependencies=protected,
    )
    def list_executions(
        ctx: Ctx,
        job: Annotated[str | None, Query(description="Only this job id's runs.")] = None,
        status_: Annotated[
            str | None,
            Query(
                alias="status",
                description="A status, or several comma-separated: failed,timed_out.",
            ),
        ] = None,
        since: Annotated[
            str | None,
            Query(
                description="Fire time at or after: ISO 8601 (naive = UTC) or an age like 2h, 7d."
            ),
        ] = None,
        until: Annotated[str | None, Query(description="Fire time before; same forms.")] = None,
        limit: Annotated[int | None, Query(description="Page size.")] = None,
        cursor: Annotated[
            str | None, Query(description="next_cursor of the previous page.")
        ] = None,
    ) -> ExecutionPage:
        """Runs matching the filters, newest fire time first, one page at a time."""
        tracker, _ = ctx
        size = page_limit(limit, settings)
        start, end = time_range(since, until)
        try:
            statuses = parse_statuses(status_) if status_ is not None else None
            before = decode_execution_cursor(cursor) if cursor is not None else None
        except ValueError as exc:
            raise unprocessable(str(exc)) from None
        rows = db_read(
            lambda: select_executions(
                tracker.engine,
                job_id=job,
                status=statuses,
                since=start,
                until=end,
                limit=size + 1,
                before=before,
            )
        )
        page = rows[:size]
        more = len(rows) > size
        return ExecutionPage(
            items=[RunSummary.of(e) for e in page],
            next_cursor=execution_cursor(page[-1].scheduled_at, page[-1].run_id) if more else None,
        )

    @router.get(
        "/executions/{run_id}",
        tags=["executions"],
        summary="One run, with its traceback",
        operation_id="tracker_get_execution",
        response_model=ExecutionOut,
        responses={**AUTH_ERRORS, 404: {"model": ErrorOut, "description": "No such run"}},
        dependencies=protected,
    )
    def read_execution(
        ctx: Ctx, run_id: Annotated[str, Path(description="The run's id.")]
    ) -> ExecutionOut:
        tracker, _ = ctx
        found = db_read(lambda: get_execution(tracker.engine, stored_run_id(run_id)))
        if found is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"No run by the id of {run_id!r} was found"
            )
        return ExecutionOut.of(found)

    # -- audit --------------------------------------------------------------------------

    @router.get(
        "/audit",
        tags=["audit"],
        summary="Management actions, newest first",
        operation_id="tracker_list_audit",
        response_model=AuditPage,
        responses={**AUTH_ERRORS, **INVALID},
        dependencies=protected,
    )
    def list_audit(
        ctx: Ctx,
        job: Annotated[str | None, Query(description="Only actions on this job id.")] = None,
        action: Annotated[
            str | None, Query(description="run, pause, resume, reschedule or remove.")
        ] = None,
        actor: Annotated[str | None, Query(description="Only this actor's actions.")] = None,
        since: Annotated[str | None, Query(description="At or after: ISO 8601 or an age.")] = None,
        until: Annotated[str | None, Query(description="Before: ISO 8601 or an age.")] = None,
        limit: Annotated[int | None, Query(description="Page size.")] = None,
        cursor: Annotated[
            str | None, Query(description="next_cursor of the previous page.")
        ] = None,
    ) -> AuditPage:
        """Who did what to which job, when, and the job before and after."""
        tracker, _ = ctx
        size = page_limit(limit, settings)
        start, end = time_range(since, until)
        actions = ("run", "pause", "resume", "reschedule", "remove")
        if action is not None and action not in actions:
            raise unprocessable(f"unknown action {action!r}; valid actions: {', '.join(actions)}")
        before_id = None
        if cursor is not None:
            try:
                before_id = decode_id_cursor(cursor)
            except ValueError as exc:
                raise unprocessable(str(exc)) from None
        rows = db_read(
            lambda: AuditLog(tracker.engine).entries(
                job_id=job,
                action=action,
                actor=actor,
                since=start,
                until=end,
                before_id=before_id,
                limit=size + 1,
            )
        )
        page = rows[:size]
        more = len(rows) > size
        return AuditPage(
            items=[
                AuditOut(
                    id=e.id or 0,
                    at=e.at,
                    actor=e.actor,
                    client=e.client,
                    action=e.action,
                    job_id=e.job_id,
                    before=dict(e.before) if e.before is not None else None,
                    after=dict(e.after) if e.after is not None else None,
                    detail=e.detail,
                )
                for e in page
            ],
            next_cursor=encode_cursor(page[-1].id or 0) if more and page else None,
        )
