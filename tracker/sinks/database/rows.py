"""Converting between :class:`~tracker.Execution` records and table rows."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..._record import Execution, Origin, Status


def to_row(e: Execution) -> dict[str, Any]:
    return {
        "run_id": e.run_id,
        "job_id": e.job_id,
        "job_name": e.job_name,
        "status": e.status.value,
        "scheduled_at": e.scheduled_at,
        "started_at": e.started_at,
        "finished_at": e.finished_at,
        "duration_s": e.duration_s,
        "lateness_s": e.lateness_s,
        "error_type": e.error_type,
        "error_message": e.error_message,
        "traceback": e.traceback,
        "instance": e.instance,
        "origin": e.origin.value,
        "coalesced": e.coalesced,
        "trace_id": e.trace_id,
        "span_id": e.span_id,
        "tags": dict(e.tags) if e.tags else None,
    }


def from_row(row: Mapping[str, Any]) -> Execution:
    tags = row["tags"]
    return Execution(
        run_id=row["run_id"],
        job_id=row["job_id"],
        job_name=row["job_name"],
        status=Status(row["status"]),
        scheduled_at=row["scheduled_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_s=row["duration_s"],
        lateness_s=row["lateness_s"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        traceback=row["traceback"],
        instance=row["instance"],
        origin=Origin(row["origin"]),
        coalesced=row["coalesced"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        tags=MappingProxyType(dict(tags)) if tags else MappingProxyType({}),
    )
