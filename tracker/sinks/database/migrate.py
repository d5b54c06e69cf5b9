"""Bringing the tracker's tables up to date with Alembic (safe with several replicas).

Alembic is imported when a migration is asked for (on the writer's thread, at start), not with
``tracker``: with Mako and Pygments it is a quarter of ``import tracker``'s time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text

from .engine import in_memory

try:
    import fcntl
except ImportError:  # Windows: SQLite migrations don't take turns
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
_PG_LOCK_KEY = 0x7472_6B72  # "trkr": one migration at a time across replicas


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config for tracker's migrations, on ``connection`` or ``url``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Migrate the tracker's tables to ``revision``; replicas starting together take turns.

    They take turns on a PostgreSQL advisory lock, or on SQLite an exclusive lock on a file
    beside the database's (``<file>.migration-lock``, where ``fcntl`` exists). Alembic reads
    the revision the database is at once the turn is taken: the one before may have done it.
    """
    with _sqlite_turn(engine), engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
        try:
            from alembic import command

            command.upgrade(alembic_config(conn), revision)
            conn.commit()
        finally:
            if postgres:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()


@contextmanager
def _sqlite_turn(engine: Engine) -> Iterator[None]:
    """Hold the exclusive lock of the SQLite database's migration-lock file (none for another
    database, an in-memory one, or where ``fcntl`` or the file can't be had). Not a lock in
    the database: a migration waiting its turn must not keep the service's writes out."""
    path = _lock_path(engine)
    lock = None
    if path is not None and fcntl is not None:
        try:
            lock = open(path, "a")  # noqa: SIM115 - closed below, which releases the lock
        except OSError:
            lock = None
    if lock is None:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _lock_path(engine: Engine) -> str | None:
    url = engine.url
    if url.get_backend_name() != "sqlite" or in_memory(url.render_as_string(hide_password=False)):
        return None
    database = url.database or ""
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return f"{database}.migration-lock" if database else None


def current_revisions(engine: Engine) -> tuple[str, ...]:
    """The revisions the database is at (one per feature branch); empty before the first."""
    from alembic.runtime.migration import MigrationContext

    from .schema import VERSION_TABLE

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return tuple(sorted(context.get_current_heads()))


def head_revisions() -> tuple[str, ...]:
    """Every head revision shipped with this version of tracker."""
    from alembic.script import ScriptDirectory

    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))
