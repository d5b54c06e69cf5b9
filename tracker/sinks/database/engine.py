"""Creating the engine: URL checks, SQLite in WAL mode, a clear error for a bad URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from ..._exceptions import ConfigurationError

DEFAULT_SQLITE_PATH = "tracker.sqlite3"
SQLITE_BUSY_TIMEOUT_MS = 200
CONNECT_TIMEOUT_S = 10
"""Seconds a PostgreSQL connect may take (unless the URL sets ``connect_timeout``)."""


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
        if backend == "postgresql" and "connect_timeout" not in parsed.query:
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
