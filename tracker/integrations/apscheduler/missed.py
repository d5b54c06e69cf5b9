"""The ``missed`` row that stands for several fire times of a job (``coalesced`` of them)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from ..._ids import new_run_id
from ..._record import Execution, Status


def missed_fire_times(
    job_id: str,
    job_name: str,
    first: datetime,
    count: int,
    message: str,
    tags: Mapping[str, str] | None = None,
) -> Execution:
    """One ``missed`` record for ``count`` fire times from ``first`` on, saying why."""
    return Execution(
        run_id=new_run_id(),
        job_id=job_id,
        job_name=job_name,
        status=Status.MISSED,
        scheduled_at=first.astimezone(UTC),
        finished_at=datetime.now(UTC),
        coalesced=count,
        error_message=message,
        tags=tags or {},
    )
