"""Run history (job_executions) and tracker instances.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tracker.sinks.database.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_executions",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scheduled_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("duration_s", sa.Float),
        sa.Column("lateness_s", sa.Float),
        sa.Column("error_type", sa.String(255)),
        sa.Column("error_message", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("instance", sa.String(255), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False, server_default="scheduled"),
        sa.Column("coalesced", sa.Integer, nullable=False, server_default="0"),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("span_id", sa.String(16)),
        sa.Column("tags", sa.JSON),
    )
    op.create_index(
        "ix_job_executions_job_id_scheduled_at", "job_executions", ["job_id", "scheduled_at"]
    )
    op.create_index(
        "ix_job_executions_status_scheduled_at", "job_executions", ["status", "scheduled_at"]
    )
    op.create_index("ix_job_executions_scheduled_at", "job_executions", ["scheduled_at"])
    op.create_table(
        "tracker_instances",
        sa.Column("instance", sa.String(255), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("stopped_at", UTCDateTime()),
    )


def downgrade() -> None:
    op.drop_table("tracker_instances")
    op.drop_index("ix_job_executions_scheduled_at", table_name="job_executions")
    op.drop_index("ix_job_executions_status_scheduled_at", table_name="job_executions")
    op.drop_index("ix_job_executions_job_id_scheduled_at", table_name="job_executions")
    op.drop_table("job_executions")
