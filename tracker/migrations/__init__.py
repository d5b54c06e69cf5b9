"""Alembic migrations of the tracker's tables (version table ``tracker_alembic_version``)."""
