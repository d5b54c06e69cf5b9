"""SQL history: the ``job_executions`` table on SQLite (embedded default) or PostgreSQL."""

from .engine import create_tracker_engine, default_url
from .migrate import upgrade
from .process_writer import ProcessDatabaseSink
from .queries import get_execution, prune, select_executions
from .schema import executions, instances, metadata
from .writer import DatabaseSink, interrupt_dead_instances

__all__ = [
    "DatabaseSink",
    "ProcessDatabaseSink",
    "create_tracker_engine",
    "default_url",
    "executions",
    "get_execution",
    "instances",
    "interrupt_dead_instances",
    "metadata",
    "prune",
    "select_executions",
    "upgrade",
]
