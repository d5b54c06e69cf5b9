"""Alembic environment: runs on the connection tracker hands over, or on ``sqlalchemy.url``."""

from __future__ import annotations

import importlib

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

from tracker.sinks.database.schema import VERSION_TABLE, metadata

# Every feature declares its tables on the shared metadata; import them so autogenerate
# compares the whole schema. (None of these modules needs an optional extra.)
for _module in ("tracker.integrations.fastapi.audit", "tracker.sinks.alerts.state"):
    importlib.import_module(_module)

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as conn:
        _run(conn)
