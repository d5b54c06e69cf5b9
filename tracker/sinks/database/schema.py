"""The tracker's own tables: run history and the instances that wrote it.

Separate from APScheduler's ``apscheduler_jobs``: no foreign keys, no cascades — a job
the job store drops must not take its history with it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

EXECUTIONS_TABLE = "job_executions"
INSTANCES_TABLE = "tracker_instances"
VERSION_TABLE = "tracker_alembic_version"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on every backend (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: tracker stores timezone-aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


metadata = MetaData()

PROBLEMS = "status IN ('failed', 'timed_out', 'interrupted', 'missed', 'skipped')"
"""The runs the partial index ``ix_job_executions_problems`` holds: those that did not succeed
(a job's failures, newest first, without reading its every run)."""

executions = Table(
    EXECUTIONS_TABLE,
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("job_id", String(255), nullable=False),
    Column("job_name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("scheduled_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("duration_s", Float),
    Column("lateness_s", Float),
    Column("error_type", String(255)),
    Column("error_message", Text),
    Column("traceback", Text),
    Column("instance", String(255), nullable=False),
    Column("origin", String(16), nullable=False, server_default="scheduled"),
    Column("coalesced", Integer, nullable=False, server_default="0"),
    Column("trace_id", String(32)),
    Column("span_id", String(16)),
    Column("tags", JSON),
    Index("ix_job_executions_job_id_scheduled_at", "job_id", "scheduled_at"),
    Index("ix_job_executions_status_scheduled_at", "status", "scheduled_at"),
    Index("ix_job_executions_scheduled_at", "scheduled_at"),
    Index(
        "ix_job_executions_problems",
        "job_id",
        "scheduled_at",
        postgresql_where=text(PROBLEMS),
        sqlite_where=text(PROBLEMS),
    ),
)

POSTGRESQL_ONLY_INDEXES = frozenset({"ix_job_executions_job_name_scheduled_at"})
"""Indexes the migrations make on PostgreSQL only, so not declared above: ``(job_name,
scheduled_at)`` serves the Grafana dashboards, which read PostgreSQL (migration
``0005_job_name``)."""

instances = Table(
    INSTANCES_TABLE,
    metadata,
    Column("instance", String(255), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    Column("stopped_at", UTCDateTime()),
)
