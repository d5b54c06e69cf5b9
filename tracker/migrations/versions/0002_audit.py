"""Audit trail of management actions (tracker_audit).

Revision ID: 0002_audit
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tracker.sinks.database.schema import UTCDateTime

revision = "0002_audit"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracker_audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("client", sa.String(255)),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(255)),
        sa.Column("before_state", sa.JSON),
        sa.Column("after_state", sa.JSON),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_tracker_audit_at", "tracker_audit", ["at"])
    op.create_index("ix_tracker_audit_job_id_id", "tracker_audit", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_tracker_audit_job_id_id", table_name="tracker_audit")
    op.drop_index("ix_tracker_audit_at", table_name="tracker_audit")
    op.drop_table("tracker_audit")
