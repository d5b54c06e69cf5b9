"""The history tables: migrations, indexes, timestamps and retention, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import create_engine, inspect

from tracker import Execution, Status, Tracker, TrackerSettings
from tracker._ids import new_run_id
from tracker.sinks.database import create_tracker_engine, metadata, upgrade
from tracker.sinks.database.migrate import current_revisions, head_revisions
from tracker.sinks.database.schema import POSTGRESQL_ONLY_INDEXES, VERSION_TABLE

TABLE_MODULES = [
    "tracker.sinks.database.schema",
    "tracker.integrations.fastapi.audit",
    "tracker.sinks.alerts.state",
]


def test_migrations_create_exactly_the_models(database_url) -> None:
    """Alembic's migrations produce the schema the code declares (autogenerate finds no diff)."""
    import importlib

    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    for module in TABLE_MODULES:  # every feature's tables are declared on the shared metadata
        importlib.import_module(module)
    engine = create_tracker_engine(database_url)
    try:
        upgrade(engine)
        upgrade(engine)  # idempotent
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": False,
                    "include_name": lambda name, kind, _: (
                        not (kind == "table" and name == VERSION_TABLE)
                        and not (kind == "index" and name in POSTGRESQL_ONLY_INDEXES)
                    ),
                },
            )
            diff = compare_metadata(context, metadata)
        assert current_revisions(engine) == head_revisions()
        names = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert diff == []
    assert {"job_executions", "tracker_instances", "tracker_alembic_version"} <= names
    assert "alembic_version" not in names, "the user's own Alembic version table is left alone"


def test_history_indexes_exist(database_url) -> None:
    """The indexes behind "last runs of a job", "failures since" and the dashboards are there."""
    engine = create_tracker_engine(database_url)
    try:
        upgrade(engine)
        indexes = {
            tuple(ix["column_names"]) for ix in inspect(engine).get_indexes("job_executions")
        }
    finally:
        engine.dispose()
    assert {("job_id", "scheduled_at"), ("status", "scheduled_at"), ("scheduled_at",)} <= indexes
    # the dashboards' (on PostgreSQL only: SQLite's writer would pay for it, and no Grafana
    # reads SQLite)
    assert (("job_name", "scheduled_at") in indexes) == database_url.startswith("postgresql")


def _record(job: str, due: datetime, status: Status = Status.SUCCEEDED) -> Execution:
    import support

    return support.finished(job, due, status=status)


def test_timestamps_round_trip_as_aware_utc(tracker) -> None:
    """A time in any zone is stored and read back as the same instant, in UTC."""
    from zoneinfo import ZoneInfo

    due = datetime(2026, 3, 29, 2, 30, 15, 123456, tzinfo=ZoneInfo("America/New_York"))
    tracker.hub.record(_record("tz", due))
    assert tracker.flush()
    (row,) = tracker.executions(job_id="tz")
    assert row.scheduled_at == due and row.scheduled_at.tzinfo is UTC


@pytest.mark.parametrize("job_id", ["nul\x00id", "report-\udcff.csv"], ids=["nul", "surrogate"])
def test_a_jobs_history_is_found_by_its_id_whatever_text_the_id_holds(tracker, job_id) -> None:
    """A job id with a NUL character (PostgreSQL's text can't hold it) or a lone surrogate (an
    undecodable file name; no driver can send it) is stored with U+FFFD in its place, and
    looking the history up by the job's own id finds it (it used to raise on both backends)."""
    due = datetime.now(UTC)
    tracker.hub.record(_record(job_id, due))
    assert tracker.flush()
    (row,) = tracker.executions(job_id=job_id)
    assert row.job_id == job_id.replace("\x00", "\ufffd").replace("\udcff", "\ufffd")
    assert row.scheduled_at == due


def test_timestamps_keep_every_microsecond_across_seconds(tracker) -> None:
    """Times on both sides of second, day and year boundaries, some in other zones, read
    back exactly (the writer reuses the text of a second it formatted just before)."""
    from zoneinfo import ZoneInfo

    base = datetime(2026, 12, 31, 23, 59, 59, 999_998, tzinfo=UTC)
    times = [base + timedelta(microseconds=n) for n in (0, 1, 2, 3, 1_000_002)]
    times.append(datetime(2027, 1, 1, 1, 0, 0, 0, tzinfo=ZoneInfo("Europe/Paris")))
    times.append(datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC))
    for n, when in enumerate(times):
        tracker.hub.record(_record(f"t{n}", when))
    assert tracker.flush()
    for n, when in enumerate(times):
        (row,) = tracker.executions(job_id=f"t{n}")
        assert row.scheduled_at == when and row.scheduled_at.tzinfo is UTC


def test_prune_older_than_keeps_recent_and_running(tracker) -> None:
    """prune(older_than=) deletes old finished runs only, in batches, and says how many."""
    now = datetime.now(UTC)
    for i in range(30):
        tracker.hub.record(_record("old", now - timedelta(days=40, minutes=i)))
    for i in range(5):
        tracker.hub.record(_record("new", now - timedelta(minutes=i)))
    tracker.hub.record(_record("old", now - timedelta(days=50), Status.RUNNING))
    assert tracker.flush()
    from tracker.sinks.database import prune

    # An age reaching back before the year 1 (tracker prune --older-than 1000000d): nothing
    # is that old, and nothing goes (it used to raise OverflowError).
    assert prune(tracker.engine, older_than=timedelta(days=1_000_000)) == 0
    assert prune(tracker.engine, older_than=timedelta(days=1_000_000), keep_last=1) == 0
    assert len(tracker.executions(limit=100)) == 36
    deleted = prune(tracker.engine, older_than=timedelta(days=30), batch_size=7)
    assert deleted == 30
    left = tracker.executions(limit=100)
    assert sorted({(r.job_id, r.status) for r in left}) == [
        ("new", Status.SUCCEEDED),
        ("old", Status.RUNNING),
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"older_than": "30d"}, "older_than must be a timedelta or a timezone-aware datetime"),
        ({"older_than": 3600}, "older_than must be a timedelta or a timezone-aware datetime"),
        ({"keep_last": "10"}, "keep_last must be a whole number >= 0, got str '10'"),
        ({"keep_last": 2.5}, "keep_last must be a whole number >= 0, got float 2.5"),
    ],
)
def test_prune_arguments_of_the_wrong_type_are_a_clear_error(tracker, arguments, message) -> None:
    """``prune(older_than="30d")`` raised a TypeError from inside (subtracting a str from a
    datetime); each wrong type is a ValueError naming the argument, and nothing is deleted."""
    import support

    support.ok_job()
    assert tracker.flush(10)
    with pytest.raises(ValueError, match=re.escape(message)):
        tracker.prune(**arguments)
    assert len(tracker.executions(job_id="ok_job")) == 1


def test_prune_keep_last_keeps_the_newest_per_job(tracker) -> None:
    """prune(keep_last=N) keeps each job's N newest runs; with older_than, both must hold."""
    now = datetime.now(UTC)
    for job in ("a", "b"):
        for i in range(10):
            tracker.hub.record(_record(job, now - timedelta(days=i)))
    assert tracker.flush()
    assert tracker.prune(older_than=timedelta(days=5, hours=12), keep_last=2) == 8
    assert tracker.prune(keep_last=3) == 6
    for job in ("a", "b"):
        rows = tracker.executions(job_id=job)
        assert [r.scheduled_at.date() for r in rows] == [
            (now - timedelta(days=i)).date() for i in range(3)
        ]
    with pytest.raises(ValueError, match="older_than, keep_last"):
        tracker.prune()


def test_prune_keep_last_counts_runs_due_at_the_same_time_one_by_one(tracker) -> None:
    """Runs due at one fire time are ordered by run id: keep_last keeps exactly N of them, the
    newest; a running run counts among the N but is never deleted; other jobs are left alone."""
    due = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    runs = [_record("burst", due) for _ in range(6)]
    runs.append(_record("burst", due - timedelta(hours=1), Status.RUNNING))
    runs.append(_record("burst", due - timedelta(hours=2)))
    others = [_record("other", due - timedelta(days=i)) for i in range(3)]
    for record in [*runs, *others]:
        tracker.hub.record(record)
    assert tracker.flush()
    assert tracker.prune(keep_last=3) == 3 + 1 + 0  # 3 of the burst, the older one; not running
    kept = {r.run_id for r in tracker.executions(job_id="burst")}
    newest_three = sorted(r.run_id for r in runs[:6])[-3:]
    assert kept == {*newest_three, runs[6].run_id}
    assert len(tracker.executions(job_id="other")) == 3


def test_bad_database_url_is_a_clear_error(tmp_path) -> None:
    """A malformed URL, unknown driver or missing directory: a ConfigurationError, no traceback."""
    from tracker import ConfigurationError, Tracker

    with pytest.raises(ConfigurationError, match="Invalid database URL"):
        Tracker("not a url")
    with pytest.raises(ConfigurationError, match="Invalid database URL"):
        Tracker("nosuchdb://x/y")
    with pytest.raises(ConfigurationError, match="does not exist"):
        Tracker(f"sqlite:///{tmp_path}/missing/dir/t.sqlite3")


def test_an_instance_id_a_database_cannot_store_is_a_clear_error(tmp_path) -> None:
    """An instance id past its 255-character column, or with a NUL or a lone surrogate in it
    (every row would be refused, or stored cut short): a ConfigurationError saying so, before
    any thread starts."""
    from tracker import ConfigurationError, Tracker

    threads = set(threading.enumerate())
    url = f"sqlite:///{tmp_path}/t.sqlite3"
    with pytest.raises(ConfigurationError, match=r"at most 255 characters .*this one has 256"):
        Tracker(url, instance="x" * 256)
    for bad in ("a\x00b", "host-\udcff"):
        with pytest.raises(ConfigurationError, match="NUL character or a lone surrogate"):
            Tracker(url, instance=bad)
    assert set(threading.enumerate()) == threads
    with Tracker(url, instance="i" * 255) as tracker:
        assert tracker.instance == "i" * 255


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "TRACKER_FLUSH_INTERVAL",
            "abc",
            "flush_interval (TRACKER_FLUSH_INTERVAL): Input should "
            "be a valid number, unable to parse string as a number; got 'abc'",
        ),
        (
            "TRACKER_WATCHDOG_GRACE",
            "-1",
            "grace (TRACKER_WATCHDOG_GRACE): Input should be greater than or equal to 0; got '-1'",
        ),
        ("TRACKER_ALERT_AFTER_FAILURES", "0", "after_failures (TRACKER_ALERT_AFTER_FAILURES)"),
        (  # no heartbeat ever: other trackers would take the live instance for dead
            "TRACKER_HEARTBEAT_INTERVAL",
            "inf",
            "heartbeat_interval (TRACKER_HEARTBEAT_INTERVAL): Input should be a finite number",
        ),
        (  # a heartbeat rarer than stale_after: live instances would be taken for dead
            "TRACKER_HEARTBEAT_INTERVAL",
            "40",
            "heartbeat_interval (40 s, TRACKER_HEARTBEAT_INTERVAL) must be at most half of "
            "stale_after (60 s, TRACKER_STALE_AFTER)",
        ),
        (
            "TRACKER_WATCHDOG_DEFAULT_MAX_RUNTIME",
            "inf",
            "default_max_runtime (TRACKER_WATCHDOG_DEFAULT_MAX_RUNTIME): Input should be a finite",
        ),
        (
            "TRACKER_METRICS_DURATION_BUCKETS",
            "[3, 1]",
            "duration_buckets (TRACKER_METRICS_DURATION_BUCKETS)",
        ),
    ],
)
def test_a_bad_environment_setting_is_a_configuration_error(
    tmp_path, monkeypatch, variable, value, message
) -> None:
    """A ``TRACKER_*`` value that can't be used is a ConfigurationError (like every other
    configuration mistake, not pydantic's ValidationError) naming the variable and the value,
    before any thread starts."""
    from tracker import ConfigurationError, Tracker

    monkeypatch.setenv(variable, value)
    threads = set(threading.enumerate())
    with pytest.raises(ConfigurationError) as raised:
        Tracker(f"sqlite:///{tmp_path}/t.sqlite3")
    assert message in str(raised.value)
    assert set(threading.enumerate()) == threads


def test_a_long_host_name_still_gets_its_runs_recorded(monkeypatch, tracker_factory) -> None:
    """The default instance id (``host:pid/xxxxxx``) keeps 200 characters of a longer host
    name: PostgreSQL would refuse every row of a 300-character one."""
    import support

    monkeypatch.setattr("tracker._ids.hostname", lambda: "h" * 300 + ".example.com")
    tracker = tracker_factory()
    assert tracker.instance.startswith("h" * 200 + ":")
    assert len(tracker.instance) <= 255
    support.ok_job()
    assert tracker.flush(10)
    [row] = tracker.executions(job_id="ok_job")
    assert row.instance == tracker.instance


def test_sqlite_runs_in_wal_mode(sqlite_url) -> None:
    """The embedded SQLite database uses write-ahead logging (readers don't block the writer)."""
    engine = create_tracker_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    plain = create_engine(sqlite_url)
    plain.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_keeps_every_run_for_every_thread(tmp_path, url) -> None:
    """``Tracker("sqlite://")``: the writer thread and readers on other threads share the one
    in-memory database (it used to be one empty database per thread: nothing was written and
    every record was spilled to disk at ``close()``); reads while it writes see whole batches
    and fail nothing, and the history is still there after ``close()``."""
    from tracker import Tracker, TrackerSettings

    settings = TrackerSettings(flush_interval=0.01, spill_dir=tmp_path)
    tracker = Tracker(url, settings=settings, metrics=False, watchdog=False)
    now = datetime.now(UTC)
    errors: list[BaseException] = []
    seen: list[list[int]] = [[] for _ in range(4)]
    done = threading.Event()

    def read(counts: list[int]) -> None:
        while not done.is_set():
            try:
                counts.append(len(tracker.executions(limit=10_000)))
            except Exception as exc:  # reported by the assertion below
                errors.append(exc)
                return

    readers = [threading.Thread(target=read, args=(counts,)) for counts in seen]
    for reader in readers:
        reader.start()
    for batch in range(20):
        for i in range(50):
            tracker.hub.record(_record(f"mem-{i % 5}", now - timedelta(seconds=batch * 50 + i)))
        assert tracker.flush(10)
    done.set()
    for reader in readers:
        reader.join(10)
    assert errors == []
    assert all(counts == sorted(counts) for counts in seen)  # no row counted, then gone
    assert any(0 < count < 1000 for counts in seen for count in counts)  # read while writing
    assert len(tracker.executions(limit=10_000)) == 1000
    assert tracker.stats().sink_errors == {}
    tracker.close()
    assert len(tracker.executions(job_id="mem-0", limit=10_000)) == 200
    assert list(tmp_path.iterdir()) == []  # nothing spilled


def test_a_large_batch_is_written_whole_and_never_regresses(tracker) -> None:
    """One flush of more rows than one statement holds writes every row once; a stale
    ``running`` state sent after a run finished never overwrites it."""
    now = datetime.now(UTC)
    records = [
        _record(f"bulk-{i % 7}", now - timedelta(seconds=i), Status.RUNNING) for i in range(1300)
    ]
    for record in records:
        tracker.hub.record(record)
    assert tracker.flush()
    finished = [
        r.evolve(status=Status.FAILED if i % 3 else Status.SUCCEEDED, finished_at=now)
        for i, r in enumerate(records)
    ]
    for record in finished:
        tracker.hub.record(record)
    assert tracker.flush()
    for record in records[:700]:  # e.g. retried after a failed write: older than what is stored
        tracker.hub.record(record)
    assert tracker.flush()
    rows = {r.run_id: r.status for r in tracker.executions(limit=5000)}
    assert rows == {r.run_id: r.status for r in finished}


@pytest.mark.postgres
@pytest.mark.parametrize("tags_type", ["json", "jsonb"])
def test_every_field_round_trips_through_postgresql_copy(postgres_url, tags_type) -> None:
    """PostgreSQL rows are written with binary ``COPY``; a table whose column has a type it is
    not used for (here ``tags`` as ``jsonb``) is written with text ``COPY``. Either way every
    field reads back as it was recorded, ``None`` included."""
    from sqlalchemy import text

    from tracker import Origin, Tracker, TrackerSettings
    from tracker.sinks.database.writer import _STAGED

    engine = create_engine(postgres_url)
    upgrade(engine)
    if tags_type == "jsonb":
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE job_executions ALTER COLUMN tags TYPE jsonb"))
    tracker = Tracker(postgres_url, settings=TrackerSettings(flush_interval=0.02))
    try:
        due = datetime(2026, 11, 23, 12, 0, 0, 1, tzinfo=UTC)
        full = Execution(
            run_id=new_run_id(),
            job_id="ledger-sync",
            job_name="sync_ledger",
            status=Status.FAILED,
            scheduled_at=due,
            started_at=due + timedelta(seconds=1.5),
            finished_at=due + timedelta(seconds=3.25),
            duration_s=1.75,
            lateness_s=1.5,
            error_type="LedgerLocked",
            error_message='ledger «7» is locked; tab\there, "quotes", back\\slash\nnew line',
            traceback="Traceback (most recent call last):\n  ...\nLedgerLocked: ledger 7",
            origin=Origin.MANUAL,
            coalesced=3,
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            span_id="00f067aa0ba902b7",
            tags={"team": "billing", "tier": "ünïcode"},
        )
        bare = Execution(
            run_id=new_run_id(),
            job_id="bare",
            job_name="bare",
            status=Status.RUNNING,
            scheduled_at=due,
        )
        for record in (full, bare):
            tracker.hub.record(record)
        assert tracker.flush()
        (got_full,) = tracker.executions(job_id="ledger-sync")
        (got_bare,) = tracker.executions(job_id="bare")
        assert got_full == full.evolve(instance=got_full.instance)
        assert got_bare == bare.evolve(instance=got_bare.instance)
        # The connection the writer used: one of those in the pool (another thread may have
        # used the engine too, e.g. the metrics' seeding from the history).
        conns = [tracker.engine.connect() for _ in range(tracker.engine.pool.checkedin())]
        try:
            seen = [conn.connection.info.get(_STAGED, "not written") for conn in conns]
        finally:
            for conn in conns:
                conn.close()
        used = next((value for value in seen if value != "not written"), "not written")
        if tags_type == "jsonb":
            assert used is None
        else:
            assert isinstance(used, list) and "timestamptz" in used and "float8" in used
    finally:
        tracker.close()
        engine.dispose()


def test_records_spilled_with_a_relative_sqlite_url_go_back_to_their_own_file(
    tmp_path, monkeypatch
) -> None:
    """Two services in two directories, each on the default ``sqlite:///tracker.sqlite3``:
    what one spilled at shutdown (its file locked) is written to its own file at its next
    start, not to the other's (the spill used to be keyed by the URL's text)."""
    import sqlite3

    import support

    from tracker import Tracker, TrackerSettings

    spill_dir = tmp_path / "spill"
    settings = TrackerSettings(flush_interval=0.02, spill_dir=spill_dir)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    Tracker("sqlite:///tracker.sqlite3", settings=settings, metrics=False).close()
    holder = sqlite3.connect(first / "tracker.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    tracker = Tracker("sqlite:///tracker.sqlite3", settings=settings, metrics=False)
    for _ in range(10):
        support.ok_job()
    tracker.close(timeout=1)
    holder.execute("COMMIT")
    holder.close()
    assert list(spill_dir.glob("*.jsonl"))
    monkeypatch.chdir(second)
    with Tracker("sqlite:///tracker.sqlite3", settings=settings, metrics=False) as other:
        assert other.flush(5)
        assert other.executions(job_id="ok_job") == []
    monkeypatch.chdir(first)
    with Tracker("sqlite:///tracker.sqlite3", settings=settings, metrics=False) as again:
        assert again.flush(5)
        assert len(again.executions(job_id="ok_job")) == 10
    assert not list(spill_dir.glob("*.jsonl"))


def test_a_damaged_spill_file_loses_only_its_damaged_lines(tmp_path, caplog) -> None:
    """A spill file with a line that can't be read (a hand edit, a bad sector): every other
    record in it is loaded, and the file is kept beside as ``.corrupt`` for a person to look
    at (it used to stop at the bad line, then be deleted whole once the rest was written)."""
    import logging

    from tracker.sinks.database import spill

    due = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    records = [_record(f"job-{n}", due + timedelta(seconds=n)) for n in range(5)]
    path = spill.spill(tmp_path, "sqlite:////x.db", "host:1/abc", records)
    lines = path.read_text().splitlines()
    damaged = [*lines[:2], lines[2][:-7], *lines[3:], "{not json"]
    path.write_text("".join(f"{line}\n" for line in damaged))
    with caplog.at_level(logging.ERROR, logger="tracker.database"):
        loaded, files = spill.load(tmp_path, "sqlite:////x.db")
    assert sorted(r.job_id for r in loaded) == ["job-0", "job-1", "job-3", "job-4"]
    assert files == [path]  # deleted by the writer once its records are written
    assert len(path.read_text().splitlines()) == 4
    kept = path.with_name(path.name + ".corrupt")
    assert kept.read_text() == "".join(f"{line}\n" for line in damaged)
    assert "could not read 2 of the 6 lines" in caplog.text
    again, _ = spill.load(tmp_path, "sqlite:////x.db")
    assert len(again) == 4  # the .corrupt file is not loaded again


def test_spill_lines_of_the_wrong_shape_are_set_aside_and_the_rest_written(
    sqlite_url, tmp_path
) -> None:
    """Lines that are JSON but not a record (a run id that is a list, an object nested past
    what the parser takes): set aside with the damaged lines, and the tracker starts and writes
    the others (they stopped every start: the file stayed, and failed the next one too)."""
    from tracker.sinks.database import spill

    Tracker(sqlite_url, settings=TrackerSettings(spill_dir=tmp_path / "none")).close()
    due = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    records = [_record(f"job-{n}", due + timedelta(seconds=n)) for n in range(3)]
    path = spill.spill(tmp_path, sqlite_url, "host:1/abc", records)
    good = path.read_text().splitlines()
    listed = json.loads(good[0])
    listed["run_id"] = [listed["run_id"]]
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text("".join(f"{line}\n" for line in [*good, json.dumps(listed), deep]))
    with Tracker(sqlite_url, settings=TrackerSettings(spill_dir=tmp_path)) as again:
        assert again.flush(timeout=10)
        assert sorted(r.job_id for r in again.executions()) == ["job-0", "job-1", "job-2"]
    assert [p.name for p in tmp_path.glob("*.corrupt")] == [f"{path.name}.corrupt"]
    assert not list(tmp_path.glob("*.jsonl"))


@pytest.mark.parametrize("limit", [0, 2**63, 10**20])
def test_a_limit_no_database_can_take_is_a_clear_error(tracker, limit) -> None:
    """``executions(limit=...)`` below 1 or past a 64-bit integer: a ValueError saying the
    range (SQLite raised OverflowError from inside its driver)."""
    with pytest.raises(
        ValueError, match=f"limit must be from 1 to 9223372036854775807, got {limit}"
    ):
        tracker.executions(limit=limit)


_WRONG_TYPES = [
    ("since", "2024-06-01", "since must be a timezone-aware datetime, got str '2024-06-01'"),
    ("since", date(2024, 6, 1), "since must be a timezone-aware datetime, got date "),
    ("until", 1717200000, "until must be a timezone-aware datetime, got int 1717200000"),
    ("status", 5, "status must be a status or a sequence of them, got int 5"),
    ("status", ["failed", None], "status must be a status or a sequence of them, got NoneType"),
    ("status", b"failed", "status must be a status or a sequence of them, got bytes "),
    ("job_id", 5, "job_id must be a string, got int 5"),
    ("limit", "10", "limit must be a whole number from 1 to 9223372036854775807, got str '10'"),
    ("limit", 2.5, "limit must be a whole number from 1 to 9223372036854775807, got float 2.5"),
    ("limit", True, "limit must be a whole number from 1 to 9223372036854775807, got bool True"),
]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    _WRONG_TYPES,
    ids=[f"{name}={type(value).__name__}" for name, value, _ in _WRONG_TYPES],
)
def test_a_filter_of_the_wrong_type_is_a_clear_error(tracker, name, value, message) -> None:
    """``executions()`` with a filter of the wrong type: a ValueError naming the parameter and
    what it got, like a naive datetime or an unknown status (it was an AttributeError from
    inside, or a float limit silently taken)."""
    with pytest.raises(ValueError, match=re.escape(message)):
        tracker.executions(**{name: value})


def test_a_run_row_is_written_as_the_record_made_of_it() -> None:
    """With the database as the only sink, the hub hands the in-process writer run rows, not
    records. The parameters written for each are those of the record made of it (as the writer
    process makes it): every time to the microsecond — on both sides of a second, the end as
    the start plus the duration — lateness, error, tags, span ids, on both backends."""
    import random
    from zoneinfo import ZoneInfo

    from tracker import Origin
    from tracker._hub import Hub
    from tracker._plain import from_run_row
    from tracker._run import Run
    from tracker.sinks.database.rows import run_row_maker, tuple_maker

    rng = random.Random(5)
    zones = [UTC, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]
    hub = Hub()
    try:
        for n in range(3_000):
            wall = rng.uniform(0, 4.2e9) if n % 10 else 1.7e9 + rng.choice([1 - 5e-7, 5e-7])
            origin = Origin.DIRECT if n % 7 == 0 else Origin.SCHEDULED
            scheduled = None
            if origin is not Origin.DIRECT:
                due = wall - rng.uniform(-1, 3600)
                if n % 100 == 1:
                    due = 5e9  # past 2106: kept as a datetime in the run row
                scheduled = datetime.fromtimestamp(due, rng.choice(zones))
            run = Run(None, f"job-{n % 9}", "name", scheduled, hub.instance, origin, {"t": "a"})
            run._wall0 = wall
            if n % 3 == 0:
                run.set_span_ids(rng.getrandbits(128), rng.getrandbits(64))
            error = KeyError(f"k{n}") if n % 4 == 0 else None
            duration = rng.choice([0.0, 3e-7, 0.0000015, 0.9999995, rng.uniform(0, 90_000)])
            row = hub._final_run_row(run, Status.FAILED if error else None, error, duration)
            row = (new_run_id(), *row[1:])
            record = from_run_row(row, 0, 0, 0)
            for dialect in ("sqlite", "postgresql"):
                assert run_row_maker(dialect)(row) == tuple_maker(dialect)(record), (n, dialect)
    finally:
        hub.close()


def test_with_only_the_database_every_field_of_a_run_reaches_its_row(tracker_factory) -> None:
    """No sink but the database (``metrics=False``): runs reach it as run rows, and each row
    holds what the run did — its fire time, start and end to the microsecond, lateness,
    duration, error, tags — a run in progress first as ``running``, then finished."""
    import time

    from apscheduler.schedulers.background import BackgroundScheduler

    from tracker import tracked_job

    tracker = tracker_factory(metrics=False)
    assert tracker.hub._run_rows
    release = threading.Event()

    @tracked_job(tags={"team": "core"})
    def fine() -> None:
        time.sleep(0.01)

    @tracked_job
    def broken() -> None:
        raise LookupError("no such thing")

    @tracked_job
    def slow() -> None:
        release.wait(10)

    scheduler = BackgroundScheduler(timezone="Asia/Kolkata")
    tracker.instrument(scheduler)
    due = datetime.now(UTC) + timedelta(milliseconds=300)
    scheduler.add_job(fine, "date", run_date=due, id="fine")
    scheduler.start()
    try:
        with pytest.raises(LookupError):
            broken()
        waiter = threading.Thread(target=slow)
        waiter.start()
        deadline = time.monotonic() + 10
        while not tracker.executions(job_id="fine") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tracker.flush()
        (running,) = tracker.executions(status=Status.RUNNING)
        release.set()
        waiter.join()
    finally:
        scheduler.shutdown(wait=True)
    assert tracker.flush()
    (ran,) = tracker.executions(job_id="fine")
    assert ran.status is Status.SUCCEEDED and ran.tags == {"team": "core"}
    assert ran.scheduled_at == due and ran.started_at >= due
    assert ran.lateness_s == (ran.started_at - due).total_seconds()
    assert ran.duration_s >= 0.01
    assert ran.finished_at - ran.started_at == timedelta(microseconds=round(ran.duration_s * 1e6))
    (failed,) = tracker.executions(job_id=broken.__qualname__)
    assert (failed.status, failed.error_type, failed.error_message) == (
        Status.FAILED,
        "LookupError",
        "no such thing",
    )
    assert failed.lateness_s == 0 and failed.scheduled_at == failed.started_at
    assert "raise LookupError" in (failed.traceback or "")
    (done,) = tracker.executions(job_id=slow.__qualname__)
    assert done.run_id == running.run_id and done.status is Status.SUCCEEDED
    assert done.started_at == running.started_at
    assert len({ran.run_id, failed.run_id, done.run_id}) == 3


def test_runs_with_and_without_errors_spans_and_tags_in_one_write_keep_every_field(
    tracker,
) -> None:
    """One write of runs that leave different columns empty — no error, an error without a
    traceback, a span but no tags, tags only... (the SQLite writer groups them, each group's
    statement writing NULL where its rows have nothing) — reads back field for field, None
    where there was nothing, and a run with nothing at all beside them."""
    import itertools
    from types import MappingProxyType

    due = datetime(2026, 12, 6, 3, 0, 0, 500_000, tzinfo=UTC)
    written = []
    for n, filled in enumerate(itertools.product([False, True], repeat=6)):
        error_type, error_message, traceback, trace_id, span_id, tags = filled
        written.append(
            Execution(
                run_id=new_run_id(),
                job_id=f"shape-{n}",
                job_name=f"shape {n}",
                status=Status.FAILED if error_type else Status.SUCCEEDED,
                scheduled_at=due,
                started_at=due + timedelta(microseconds=n),
                finished_at=due + timedelta(seconds=1, microseconds=n),
                duration_s=1.0,
                lateness_s=n / 1e6,
                error_type="ValueError" if error_type else None,
                error_message=f"bad {n}" if error_message else None,
                traceback=f"Traceback {n}" if traceback else None,
                instance=tracker.instance,
                trace_id=f"{n:032x}" if trace_id else None,
                span_id=f"{n:016x}" if span_id else None,
                tags=MappingProxyType({"n": str(n)} if tags else {}),
            )
        )
    for record in written:
        tracker.hub.record(record)
    assert tracker.flush()
    read = {row.run_id: row for row in tracker.executions(limit=1_000)}
    assert len(read) == 64
    for record in written:
        assert read[record.run_id] == record


def test_a_fire_time_past_year_9999_in_utc_costs_only_its_own_run(tracker) -> None:
    """A run whose fire time falls past year 9999 once in UTC (late on 31 December 9999 in New
    York) cannot be recorded: it is dropped alone, counted as the hub's error, and the runs
    before and after it in the same batches are written and counted (run rows carried it to
    every sink, where it failed each write and flush for good)."""
    from zoneinfo import ZoneInfo

    from tracker import Origin

    hub = tracker.hub
    assert hub._run_rows  # (the defaults: database and metrics)
    far = datetime(9999, 12, 31, 22, 0, tzinfo=ZoneInfo("America/New_York"))
    for n in range(6):
        run = hub.begin(f"ok{n}", f"ok{n}", None, Origin.DIRECT, None, None, None)
        hub.finish(run)
        if n == 2:
            run = hub.begin("far", "far", far, Origin.SCHEDULED, None, None, None)
            hub.finish(run)
    assert tracker.flush()
    assert sorted(r.job_id for r in tracker.executions()) == [f"ok{n}" for n in range(6)]
    assert tracker.stats().sink_errors == {"hub": 1}
    assert tracker.database.pending == 0
    metrics = tracker.metrics.render_own().decode()
    for n in range(6):
        assert f'jobtracker_runs_total{{job="ok{n}",status="succeeded"}} 1' in metrics
