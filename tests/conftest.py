"""Shared fixtures: real databases (SQLite file, PostgreSQL schema), trackers, servers.

Tests that need a server skip with a reason when it is absent, except when
``TRACKER_REQUIRE_SERVERS=1`` (set by ``.ci/run``), where a missing server fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

POSTGRES_URL = os.environ.get(
    "TRACKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVERS = os.environ.get("TRACKER_REQUIRE_SERVERS") == "1"


def need(reason: str) -> None:
    """Skip (locally) or fail (in CI) because a real server is missing."""
    if REQUIRE_SERVERS:
        pytest.fail(f"required server missing: {reason}")
    pytest.skip(reason)


def _postgres_available() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}: {exc}"
    return None


_pg_problem: str | bool | None = False


def postgres_problem() -> str | None:
    global _pg_problem
    if _pg_problem is False:
        _pg_problem = _postgres_available()
    return _pg_problem  # type: ignore[return-value]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tracker.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema of the ``test`` database."""
    problem = postgres_problem()
    if problem:
        need(problem)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The contract suite's backends: every test using this runs on SQLite and PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def tracker_factory(database_url: str) -> Iterator[object]:
    """Builds trackers on the parametrized database and closes them after the test."""
    from tracker import Tracker, TrackerSettings

    made: list[Tracker] = []

    def make(*, metrics: bool = True, **settings: object) -> Tracker:
        options: dict[str, object] = {"flush_interval": 0.02}
        options.update(settings)
        tracker = Tracker(
            database_url,
            settings=TrackerSettings(**options),  # type: ignore[arg-type]
            metrics=metrics,
        )
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=5)


@pytest.fixture
def tracker(tracker_factory: object) -> object:
    """A tracker on the parametrized database (SQLite file or PostgreSQL schema)."""
    return tracker_factory()  # type: ignore[operator]
