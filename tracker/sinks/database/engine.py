"""Creating the engine: URL checks, SQLite in WAL mode, a clear error for a bad URL."""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from ..._exceptions import ConfigurationError

DEFAULT_SQLITE_PATH = "tracker.sqlite3"
SQLITE_BUSY_TIMEOUT_MS = 200
CONNECT_TIMEOUT_S = 10
"""Seconds a PostgreSQL connect may take (unless the URL sets ``connect_timeout``)."""
MEMORY_WAIT_S = 30.0
"""Seconds a user of an in-memory SQLite database waits for its one connection (as long as
SQLAlchemy's pools wait for a free connection)."""


def default_url() -> str:
    """The embedded default: a SQLite file in the working directory."""
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


def normalise_url(url: str) -> str:
    """Pick the psycopg 3 driver for a bare ``postgresql://`` URL; make a SQLite file's path
    absolute (the working directory's file: the spill files of records unwritten at shutdown
    are keyed by the URL, and another service in another directory must not take them)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        try:
            parsed = make_url(url)
        except ArgumentError:
            return url  # the engine reports it
        database = parsed.database
        if (
            database
            and database != ":memory:"
            and not database.startswith("file:")
            and parsed.query.get("mode") != "memory"
            and not Path(database).is_absolute()
        ):
            absolute = str(Path(database).expanduser().resolve())
            return parsed.set(database=absolute).render_as_string(hide_password=False)
    return url


def in_memory(url: str) -> bool:
    """Whether ``url`` is an in-memory SQLite database (``sqlite://``, ``:memory:``,
    ``mode=memory``): it exists only in its one connection."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False  # the engine reports the bad URL
    database = parsed.database or ""
    return parsed.get_backend_name() == "sqlite" and (
        database in ("", ":memory:")
        or "mode=memory" in database
        or parsed.query.get("mode") == "memory"
    )


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def create_tracker_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the tracker's tables. Raises :class:`ConfigurationError` for a bad URL."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"Invalid database URL {url!r}: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            parent = Path(database).expanduser().resolve().parent
            if not parent.is_dir():
                raise ConfigurationError(
                    f"Invalid database URL {redact(url)}: directory {parent} does not exist"
                )
    try:
        options: dict[str, Any] = {"pool_pre_ping": backend != "sqlite"}
        if in_memory(url):
            # The database lives in its connection: every thread (the writer's, the readers')
            # must use that one, and one at a time (a reader's rollback on return would undo
            # the writer's transaction in progress).
            options["poolclass"] = SharedMemoryPool
            options["connect_args"] = {"check_same_thread": False}
        elif backend == "postgresql" and "connect_timeout" not in parsed.query:
            # A server that stopped answering must not hold a connect (and the writer, and a
            # shutdown) forever: libpq waits without limit by default.
            options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        options.update(kwargs)
        engine = create_engine(url, **options)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigurationError(f"Invalid database URL {redact(url)}: {exc}") from None
    except ImportError as exc:
        hint = " (install tracker[postgresql])" if backend == "postgresql" else ""
        raise ConfigurationError(f"No driver for {redact(url)}: {exc}{hint}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


class SharedMemoryPool(StaticPool):
    """The one connection of an in-memory SQLite database, lent to one user at a time.

    A user waits up to :data:`MEMORY_WAIT_S` for it (then SQLAlchemy's ``TimeoutError``, as
    from a full pool). :meth:`dispose` keeps the connection: closing it would drop the
    database, and the tracker's sinks dispose of the engine as they stop while its history is
    still read (``executions()`` after ``close()``). The connection closes when the pool is
    garbage collected, or at exit. A process forked from this one gets a new, empty database.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lent = threading.Lock()
        self._pid = os.getpid()
        self._finalized: set[int] = set()

    def _do_get(self) -> ConnectionPoolEntry:
        if not self._lent.acquire(timeout=MEMORY_WAIT_S):
            raise PoolTimeoutError(
                f"the in-memory SQLite database's connection was not given back within "
                f"{MEMORY_WAIT_S:g} s"
            )
        try:
            record = super()._do_get()
        except BaseException:
            self._lent.release()
            raise
        connection = record.dbapi_connection
        if connection is not None and id(connection) not in self._finalized:
            self._finalized.add(id(connection))
            weakref.finalize(self, connection.close)
        return record

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self._lent.locked():
            self._lent.release()

    def dispose(self) -> None:
        if os.getpid() != self._pid:
            super().dispose()

    def recreate(self) -> StaticPool:
        if os.getpid() == self._pid:
            return self
        return super().recreate()
