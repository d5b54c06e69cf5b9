"""Alert state: job states, flips (state changes) and their deliveries.

Revision ID: 0003_alerts
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tracker.sinks.database.schema import UTCDateTime

revision = "0003_alerts"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracker_alert_jobs",
        sa.Column("job_id", sa.String(255), primary_key=True),
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16)),
        sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("recent", sa.String(100), nullable=False, server_default=""),
        sa.Column("down_since", UTCDateTime()),
        sa.Column("last_alert_at", UTCDateTime()),
        sa.Column("last_run_id", sa.String(36)),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_tracker_alert_jobs_updated_at", "tracker_alert_jobs", ["updated_at"])
    op.create_table(
        "tracker_alert_flips",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("old_state", sa.String(16), nullable=False),
        sa.Column("new_state", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("reminder", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("processed_at", UTCDateTime()),
        sa.Column("processed_by", sa.String(255)),
    )
    op.create_index(
        "ix_tracker_alert_flips_job_id_created_at", "tracker_alert_flips", ["job_id", "created_at"]
    )
    op.create_index(
        "ix_tracker_alert_flips_unprocessed",
        "tracker_alert_flips",
        ["created_at"],
        postgresql_where=sa.text("processed_at IS NULL"),
        sqlite_where=sa.text("processed_at IS NULL"),
    )
    op.create_table(
        "tracker_alert_deliveries",
        sa.Column("flip_id", sa.String(36), primary_key=True),
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("instance", sa.String(255)),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_tracker_alert_deliveries_status", "tracker_alert_deliveries", ["status"])


def downgrade() -> None:
    op.drop_index("ix_tracker_alert_deliveries_status", table_name="tracker_alert_deliveries")
    op.drop_table("tracker_alert_deliveries")
    op.drop_index("ix_tracker_alert_flips_unprocessed", table_name="tracker_alert_flips")
    op.drop_index("ix_tracker_alert_flips_job_id_created_at", table_name="tracker_alert_flips")
    op.drop_table("tracker_alert_flips")
    op.drop_index("ix_tracker_alert_jobs_updated_at", table_name="tracker_alert_jobs")
    op.drop_table("tracker_alert_jobs")
