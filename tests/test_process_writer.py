"""The writer process (``database_writer="process"``): same rows, and nothing lost when
either process dies. Outages and shutdown spills are in test_durability.py (both writers)."""

from __future__ import annotations

import contextlib
import enum
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta, tzinfo

import pytest
import support
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, select

from tracker import (
    ConfigurationError,
    Execution,
    Origin,
    Status,
    Tracker,
    TrackerSettings,
    tracked_job,
)
from tracker._ids import new_run_id
from tracker.sinks.database import DatabaseSink, ProcessDatabaseSink, instances


@tracked_job(tags={"team": "billing"})
def tagged(fail: bool) -> None:
    if fail:
        raise KeyError("missing invoice")


def _record_runs(tracker: Tracker) -> list[tuple[object, ...]]:
    for fail in (False, True, False):
        with contextlib.suppress(KeyError):
            tagged(fail)
    assert tracker.flush(timeout=20)
    rows = [
        r for r in tracker.executions(job_id=tagged.__qualname__) if r.instance == tracker.instance
    ]
    assert len(rows) == 3
    for row in rows:
        assert row.started_at is not None and row.started_at.tzinfo is not None
        assert row.finished_at is not None and row.finished_at >= row.started_at
    return sorted(
        (r.status, r.error_type, r.error_message, dict(r.tags), r.origin, bool(r.traceback))
        for r in rows
    )


def test_rows_are_those_of_the_thread_writer(database_url, monkeypatch) -> None:
    """Chosen by ``TRACKER_DATABASE_WRITER``, the writer process stores the very rows the
    in-process writer stores for the same runs."""
    with Tracker(database_url, settings=TrackerSettings(flush_interval=0.02)) as tracker:
        assert isinstance(tracker.database, DatabaseSink)
        expected = _record_runs(tracker)
    monkeypatch.setenv("TRACKER_DATABASE_WRITER", "process")
    with Tracker(database_url, settings=TrackerSettings(flush_interval=0.02)) as tracker:
        assert isinstance(tracker.database, ProcessDatabaseSink)
        assert tracker.database.pid not in (None, os.getpid())
        got = _record_runs(tracker)
        assert tracker.database.healthy and tracker.database.written >= 3
    assert got == expected
    assert [r[0] for r in got].count(Status.FAILED) == 1


def test_a_killed_writer_process_loses_nothing(sqlite_url) -> None:
    """SIGKILL the writer mid-stream: another starts, gets what was not durable, and every
    run is written once."""
    settings = TrackerSettings(flush_interval=0.02, database_writer="process")
    with Tracker(sqlite_url, settings=settings) as tracker:
        sink = tracker.database
        assert isinstance(sink, ProcessDatabaseSink)
        first = sink.pid
        assert first is not None
        for i in range(300):
            support.ok_job()
            if i == 150:
                os.kill(first, signal.SIGKILL)
        assert tracker.flush(timeout=30)
        assert sink.restarts == 1
        assert tracker.stats().sink_errors == {"database": 1}  # jobtracker_sink_errors_total
        assert sink.pid not in (None, first)
        assert sink.healthy
        assert len(tracker.executions(job_id="ok_job", limit=1000)) == 300
        assert sum(tracker.stats().dropped.values()) == 0


SERVICE = textwrap.dedent(
    """
    import os, signal, sys, time
    import support
    from tracker import Tracker, TrackerSettings
    tracker = Tracker(sys.argv[1], settings=TrackerSettings(
        flush_interval=0.02, database_writer="process", spill_dir=sys.argv[2]))
    for _ in range(200):
        support.ok_job()
    deadline = time.monotonic() + 20
    # Handed to the writer process (which cannot write: the test holds the lock).
    while tracker.hub.stats().pending != 200 or tracker.database.pending != 200:
        assert time.monotonic() < deadline, tracker.hub.stats()
        time.sleep(0.02)
    print(tracker.database.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_service_s_writer_writes_what_it_received(sqlite_url, tmp_path) -> None:
    """The service is killed while the database is locked: its writer process sees the pipe
    close, waits out the lock, writes the 200 runs it was sent, and exits."""
    path = sqlite_url.removeprefix("sqlite:///")
    Tracker(sqlite_url).close()  # tables made before the lock is taken
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])}
    log = tmp_path / "service.log"
    with log.open("w") as stderr:  # shared with the writer process, which outlives the service
        service = subprocess.Popen(
            [sys.executable, "-c", SERVICE, sqlite_url, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert service.stdout is not None
        writer = int(service.stdout.readline())
        assert service.wait(30) == -signal.SIGKILL, log.read_text()
        time.sleep(0.3)
        assert _alive(writer), log.read_text()
    finally:
        if service.stdout is not None:
            service.stdout.close()
        holder.execute("COMMIT")
        holder.close()
    support.wait_for(lambda: not _alive(writer), timeout=30)
    assert not list(tmp_path.glob("*.jsonl")), log.read_text()
    with sqlite3.connect(path) as conn:
        written = conn.execute(
            "SELECT count(*) FROM job_executions WHERE job_id = 'ok_job' AND status = 'succeeded'"
        ).fetchone()[0]
    assert written == 200


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped: its parent was killed) counts as gone.
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite+pysqlite:///:memory:"])
def test_an_in_memory_database_is_refused(url) -> None:
    """Two processes cannot share an in-memory SQLite database: a clear error, at start."""
    with pytest.raises(ConfigurationError, match="in memory"):
        Tracker(url, settings=TrackerSettings(database_writer="process"))


def _stop_writer(sink: ProcessDatabaseSink) -> int:
    """Stop ``sink``'s writer process (SIGSTOP: a database call that never returns); its pid,
    for the SIGCONT after."""
    writer = sink.pid
    assert writer is not None
    os.kill(writer, signal.SIGSTOP)
    return writer


def test_a_writer_that_stops_reading_cannot_hang_close(sqlite_url, tmp_path) -> None:
    """The writer process stops (SIGSTOP) and its pipe fills: the jobs carry on, close()
    returns within its timeout, and what was not durable is spilled, then written by the
    next tracker."""
    settings = TrackerSettings(flush_interval=0.02, database_writer="process", spill_dir=tmp_path)
    tracker = Tracker(sqlite_url, settings=settings)
    sink = tracker.database
    assert isinstance(sink, ProcessDatabaseSink)
    writer = _stop_writer(sink)
    try:
        started = time.monotonic()
        for _ in range(3000):  # far more than a pipe holds
            support.ok_job()
        assert time.monotonic() - started < 10, "the jobs never waited for the writer"
        # The writer holds nothing durable: the sink keeps what it could not send.
        support.wait_for(lambda: sink.pending > 0)
        seen = tracker.stats()  # for the message below, should a run go missing
        assert sink.healthy, "silent for less than answer_within"
        sink.answer_within = 1.0
        support.wait_for(lambda: not sink.healthy, timeout=5)
        assert "has not answered" in (sink.last_error or "")
        started = time.monotonic()
        tracker.close(timeout=3)
        assert time.monotonic() - started < 8
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer, signal.SIGCONT)
    assert not _alive(writer), "the stuck writer was stopped"
    assert list(tmp_path.glob("*.jsonl")), "what was not durable was spilled"
    with Tracker(sqlite_url, settings=TrackerSettings(spill_dir=tmp_path)) as again:
        assert again.flush(timeout=10)
        assert len(again.executions(job_id="ok_job", limit=10_000)) == 3000, seen


def test_a_writer_that_keeps_dying_is_restarted_less_and_less_often(
    sqlite_url, tmp_path, monkeypatch
) -> None:
    """Writers that die at start are started again after 1 s, then 2 s, 4 s... (not once a
    second forever), and the records wait for one that works."""
    from tracker.sinks.database import process_writer

    settings = TrackerSettings(flush_interval=0.02, database_writer="process", spill_dir=tmp_path)
    tracker = Tracker(sqlite_url, settings=settings)
    sink = tracker.database
    assert isinstance(sink, ProcessDatabaseSink)
    starts: list[float] = []
    real_child = process_writer._Child

    def failing_child(*args: object, **kwargs: object) -> object:
        starts.append(time.monotonic())
        return real_child(*args, **kwargs)

    monkeypatch.setattr(process_writer, "_Child", failing_child)
    monkeypatch.setattr(process_writer, "_BOOTSTRAP", "import sys; sys.exit(3)")
    assert sink.pid is not None
    os.kill(sink.pid, signal.SIGKILL)
    for _ in range(10):
        support.ok_job()
    time.sleep(4.5)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 3, starts  # at about 0, 1 and 3 s
    assert gaps[1] > gaps[0] * 1.5
    assert not sink.healthy and sink.pending == 10
    monkeypatch.undo()  # a writer that works: everything arrives
    assert tracker.flush(timeout=15)
    assert len(tracker.executions(job_id="ok_job")) == 10
    tracker.close()


def test_a_dead_writer_does_not_make_the_services_runs_interrupted(sqlite_url, monkeypatch) -> None:
    """The instance is the service's, not its writer's: while the killed writer cannot be
    replaced, another tracker starting on the database leaves the service's run in progress
    alone (the writer's pid is dead, the service's is not); once a writer works again, the
    run is written as it ended."""
    from tracker.sinks.database import process_writer

    started, release = threading.Event(), threading.Event()

    @tracked_job
    def long_one() -> None:
        started.set()
        release.wait(10)

    settings = TrackerSettings(flush_interval=0.02, database_writer="process")
    with Tracker(sqlite_url, settings=settings) as tracker:
        sink = tracker.database
        assert isinstance(sink, ProcessDatabaseSink)
        job = threading.Thread(target=long_one)
        job.start()
        assert started.wait(5)
        assert tracker.flush(10)  # the run is a running row
        first = sink.pid
        assert first is not None
        monkeypatch.setattr(process_writer, "_BOOTSTRAP", "import sys; sys.exit(3)")
        os.kill(first, signal.SIGKILL)
        support.wait_for(lambda: sink.restarts == 1, timeout=15)
        with Tracker(sqlite_url, settings=TrackerSettings(flush_interval=0.02)) as other:
            (row,) = other.executions(job_id=long_one.__qualname__)
            assert row.status is Status.RUNNING, row.error_message
        monkeypatch.undo()
        release.set()
        job.join()
        assert tracker.flush(15)
        (row,) = tracker.executions(job_id=long_one.__qualname__)
        assert row.status is Status.SUCCEEDED


def test_records_reach_the_writer_process_with_every_microsecond() -> None:
    """Times cross the pipe as floats where that is exact (1834-2106) and as datetimes
    elsewhere: every record comes back equal, to the microsecond, in any zone, at the edges
    of the float range and of the calendar."""
    import pickle
    import random
    from datetime import UTC, datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    from tracker import Execution, Origin
    from tracker.sinks.database.rows import from_plain, to_plain

    rng = random.Random(7)
    edges = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2106, 2, 7, 6, 28, 15, 999_999, tzinfo=UTC),  # just under 2**32 s
        datetime(2106, 2, 7, 6, 28, 16, 1, tzinfo=UTC),  # just over: kept as a datetime
        datetime(1833, 11, 24, 17, 31, 44, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 7, 1, 2, 30, 0, 123_456, tzinfo=ZoneInfo("Europe/Paris")),
        datetime(2026, 12, 4, 12, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ]
    start = datetime(1850, 1, 1, tzinfo=UTC)
    spread = [
        start + timedelta(microseconds=rng.randrange(250 * 365 * 86_400 * 10**6))
        for _ in range(20_000)
    ]
    for moment in edges + spread:
        record = Execution(
            run_id="r",
            job_id="j",
            job_name="j",
            status=Status.SUCCEEDED,
            scheduled_at=moment,
            started_at=moment,
            finished_at=None,
            origin=Origin.MANUAL,
            tags={"team": "a"},
        )
        back = from_plain(pickle.loads(pickle.dumps(to_plain(record))))
        assert back == record
        assert back.scheduled_at.utcoffset() == timedelta(0)
        assert back.finished_at is None


def test_a_killed_services_running_runs_become_interrupted(database_url, tmp_path) -> None:
    """SIGKILL a service (writer process) while a job runs: its writer process, seeing its
    input close, writes what it was sent and closes the run left ``running`` as interrupted
    (it used to mark the instance stopped, and no later tracker looked at its rows again);
    another live service's run is untouched."""
    here = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, *sys.path])}
    script = os.path.join(here, "proc_scheduler.py")
    dead_marker, live_marker = tmp_path / "dead", tmp_path / "live"
    dead = subprocess.Popen(
        [sys.executable, script, "hang", database_url, str(dead_marker)],
        env={**env, "TRACKER_DATABASE_WRITER": "process"},
    )
    live = subprocess.Popen(
        [sys.executable, script, "hang", database_url, str(live_marker)],
        env={**env, "TRACKER_DATABASE_WRITER": "process"},
    )
    try:
        with Tracker(database_url, metrics=False, watchdog=False) as reader:

            def statuses() -> list[Status]:
                return sorted(r.status for r in reader.executions())

            support.wait_for(lambda: statuses() == [Status.RUNNING] * 2, timeout=30)
            dead.send_signal(signal.SIGKILL)
            dead.wait(10)
            support.wait_for(lambda: statuses() == [Status.INTERRUPTED, Status.RUNNING], 30)
            (closed,) = reader.executions(status="interrupted")
            assert f":{dead.pid}/" in closed.instance
            assert "ended while it was in progress" in (closed.error_message or "")
    finally:
        for p in (dead, live):
            if p.poll() is None:
                p.kill()
            p.wait(10)


def test_the_run_rows_the_hub_sends_make_its_records_to_the_microsecond() -> None:
    """With only the writer process's sink, the hub sends finished runs as run rows, not
    records: the record made from each (in the writer process) is the one the hub makes for
    other sinks — times, lateness, duration, error, tags, origin, span ids — for fire times in
    any zone, direct runs, and times on both sides of the float range. A run whose id was never
    asked for gets one from its place in the batch: the same when made again, unique."""
    import random
    import uuid
    from datetime import UTC, datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    from tracker import Origin
    from tracker._hub import Hub
    from tracker._plain import from_sent, is_plain
    from tracker._run import Run

    class Rows:
        name = "rows"
        run_rows = True
        handles_jobs = False

        def handle(self, events) -> None: ...
        def tick(self) -> None: ...
        def flush(self, timeout: float) -> bool:
            return True

        def close(self, timeout: float) -> None: ...

    rng = random.Random(11)
    zones = [UTC, ZoneInfo("Europe/Paris"), timezone(timedelta(hours=-3, minutes=-30))]
    hub = Hub([Rows()])
    made_ids = set()
    try:
        assert hub._run_rows
        for n in range(5_000):
            wall = rng.uniform(0, 4.2e9) if n % 10 else rng.choice([1e9 + 5e-7, 1.7e9 + 1 - 5e-7])
            origin = Origin.DIRECT if n % 7 == 0 else rng.choice([Origin.SCHEDULED, Origin.MANUAL])
            scheduled = None
            if origin is not Origin.DIRECT:
                due = wall - rng.uniform(-5, 5000)
                if n % 50 == 1:
                    due = rng.choice([5e9, -5e9])  # past 2106, before 1834: kept as datetimes
                scheduled = datetime.fromtimestamp(due, rng.choice(zones))
            run = Run(
                None,
                f"job-{n % 13}",
                f"name {n % 13}",
                scheduled,
                hub.instance,
                origin,
                {"team": "a"} if n % 3 else None,
            )
            run._wall0 = wall
            if n % 5 == 0:
                run.set_span_ids(rng.getrandbits(128), rng.getrandbits(64))
            error = ValueError(f"bad {n}") if n % 4 == 0 else None
            duration = rng.choice([0.0, 1e-7, 0.0000015, rng.uniform(0, 100)])
            final = Status.FAILED if error else Status.SUCCEEDED
            row = hub._final_run_row(run, final, error, duration)
            assert is_plain(row) and row[0] is None  # nobody asked for its id
            got = from_sent(row, 12345, n // 100, n % 100)
            assert from_sent(row, 12345, n // 100, n % 100).run_id == got.run_id
            assert uuid.UUID(got.run_id).version == 7
            made_ids.add(got.run_id)
            expected = hub._final_record(run, final, error, duration)  # (gives the run an id)
            assert got.started_at == expected.started_at
            assert got.scheduled_at == expected.scheduled_at
            assert got.scheduled_at.utcoffset() == timedelta(0)
            assert got._replace(run_id=expected.run_id) == expected, n
            assert from_sent(hub._final_run_row(run, final, error, duration), 1, 1, 1) == expected
    finally:
        hub.close()
    assert len(made_ids) == 5_000


# -- regressions found in review of the writer process --------------------------------------


def _record(instance: str, status: Status = Status.RUNNING, **fields: object) -> Execution:
    """A run's record: ``running``, or ended with ``status`` (same run: ``.evolve(status=...)``)."""
    now = datetime.now(UTC)
    return Execution(
        run_id=new_run_id(),
        job_id="job",
        job_name="job",
        status=status,
        scheduled_at=now,
        started_at=now,
        instance=instance,
        **fields,  # type: ignore[arg-type]
    )


def _ended(record: Execution) -> Execution:
    return record.evolve(
        status=Status.SUCCEEDED, finished_at=datetime.now(UTC), duration_s=0.1, lateness_s=0.0
    )


def _statuses(sqlite_url: str) -> dict[str, str]:
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        return dict(conn.execute("SELECT run_id, status FROM job_executions").fetchall())


def test_a_full_buffer_keeps_one_record_per_run_as_the_thread_writer_does(
    sqlite_url, tmp_path
) -> None:
    """While the database is locked, runs announced ``running`` that then end take one place
    each in ``buffer_size``, not two: the final state takes the place of the ``running`` one
    (60 runs, bound 100: none dropped; the final states used to be cut, leaving rows
    ``running`` for good)."""
    settings = TrackerSettings(
        flush_interval=0.02, database_writer="process", buffer_size=100, spill_dir=tmp_path
    )
    tracker = Tracker(sqlite_url, settings=settings, metrics=False, watchdog=False)
    sink = tracker.database
    assert isinstance(sink, ProcessDatabaseSink)
    release = threading.Event()

    @tracked_job
    def long_run() -> None:
        release.wait(10)

    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        runs = [threading.Thread(target=long_run) for _ in range(60)]
        for run in runs:
            run.start()
        support.wait_for(lambda: sink.pending == 60)  # each announced `running`
        release.set()
        for run in runs:
            run.join()
        assert not tracker.flush(timeout=0.5)  # (every final state handed to the sink by then)
        assert tracker.stats().dropped == {}
        # Within the bound: 60 when every final state met a full buffer; a last batch that
        # fits beside the others is sent as it is (its runs' `running` records are written
        # before their final ones once the database is back).
        assert 60 <= sink.pending <= 100
        holder.execute("COMMIT")
        assert tracker.flush(timeout=10)
    finally:
        holder.close()
        tracker.close()
    assert sorted(_statuses(sqlite_url).values()) == ["succeeded"] * 60


def test_past_the_bound_new_running_states_are_dropped_before_final_ones(
    sqlite_url, tmp_path
) -> None:
    """Bound 4, three runs waiting as ``running``, then the end of one of them, two new runs
    ``running`` and one new run ended: the ended run's ``running`` record makes room for its
    final state, and of the rest the two ``running`` states are dropped (and counted), not
    the final one."""
    drops: list[int] = []
    sink = ProcessDatabaseSink(
        sqlite_url,
        instance="bounded",
        buffer_size=4,
        spill_dir=tmp_path,
        interval=0.02,
        on_drop=lambda _name, count: drops.append(count),
    )
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        first, second, third = (_record("bounded") for _ in range(3))
        sink.handle([first, second, third])
        late_running, late_ended, last_running = (_record("bounded") for _ in range(3))
        sink.handle([_ended(first), late_running, _ended(late_ended), last_running])
        assert drops == [2]
        assert sink.pending == 4
        holder.execute("COMMIT")
        assert sink.flush(timeout=10)
    finally:
        holder.close()
        sink.close(timeout=5)
    assert _statuses(sqlite_url) == {
        first.run_id: "succeeded",
        second.run_id: "running",
        third.run_id: "running",
        late_ended.run_id: "succeeded",
    }


def test_job_ids_and_names_of_str_subclasses_reach_the_writer_process_as_text(
    sqlite_url, tmp_path, monkeypatch
) -> None:
    """A job id (and an instance id) that is a ``StrEnum`` member of the service's ``__main__``
    (the writer process cannot import it: it died on each batch, was started again into the
    same batch forever, and nothing more was written) and a name of a class defined in a
    function (cannot be pickled at all) are written as their text, with the runs of the other
    jobs."""
    jobs = enum.StrEnum(
        "Jobs", {"REPORT": "daily_report", "INSTANCE": "billing-1"}, module="__main__"
    )
    monkeypatch.setattr(sys.modules["__main__"], "Jobs", jobs, raising=False)

    class Local(str):
        pass

    settings = TrackerSettings(flush_interval=0.02, database_writer="process", spill_dir=tmp_path)
    tracker = Tracker(
        sqlite_url, settings=settings, metrics=False, watchdog=False, instance=jobs.INSTANCE
    )
    assert type(tracker.instance) is str
    assert tracker.hub._run_rows  # the hub's run rows, then records (below)
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    ran = threading.Event()
    scheduler.add_listener(lambda _event: ran.set(), EVENT_JOB_EXECUTED)
    try:
        scheduler.start()
        scheduler.add_job(support.ok_job, "date", id=jobs.REPORT, name=Local("daily report"))
        assert ran.wait(10)
        tracker.hub.record(_record(tracker.instance, Status.SUCCEEDED)._replace(job_id=Local("x")))
        support.ok_job()
        assert tracker.flush(timeout=10)
        sink = tracker.database
        assert isinstance(sink, ProcessDatabaseSink)
        assert sink.restarts == 0
        assert tracker.stats().sink_errors == {} and tracker.stats().dropped == {}
        (report,) = tracker.executions(job_id="daily_report")
        assert (report.job_name, report.status) == ("daily report", Status.SUCCEEDED)
        assert len(tracker.executions(job_id="x")) == 1
        assert len(tracker.executions(job_id="ok_job")) == 1
    finally:
        scheduler.shutdown()
        tracker.close()


class _Shifted(tzinfo):
    """A time zone class of the service's own (put in its ``__main__`` by the test)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=2)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "SHIFTED"


def test_far_times_in_a_time_zone_class_of_the_service_reach_the_writer_process(
    sqlite_url, tmp_path, monkeypatch
) -> None:
    """Times past 2106 are sent as datetimes: one whose ``tzinfo`` is a class of the service's
    ``__main__`` (which the writer process cannot import) made the writer exit on its batch,
    again at every restart, and nothing more was written. They are sent with their offset as a
    builtin ``timezone``: the same instant is stored."""
    monkeypatch.setattr(_Shifted, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "_Shifted", _Shifted, raising=False)
    due = datetime(2200, 1, 1, 12, 0, tzinfo=_Shifted())
    settings = TrackerSettings(flush_interval=0.02, database_writer="process", spill_dir=tmp_path)
    with Tracker(sqlite_url, settings=settings, metrics=False, watchdog=False) as tracker:
        assert tracker.hub._run_rows  # a run's fire time goes as a run row's
        record = _record(tracker.instance, Status.SUCCEEDED)._replace(
            job_id="record", scheduled_at=due, started_at=due, finished_at=due
        )
        tracker.hub.record(record)
        run = tracker.hub.begin("run", "run", due, Origin.SCHEDULED, None, None, None)
        tracker.hub.finish(run)
        assert tracker.flush(timeout=10)
        sink = tracker.database
        assert isinstance(sink, ProcessDatabaseSink)
        assert sink.restarts == 0
        (stored,) = tracker.executions(job_id="record")
        (ran,) = tracker.executions(job_id="run")
    assert stored.scheduled_at == stored.started_at == due
    assert stored.scheduled_at.utcoffset() == timedelta(0)
    assert ran.scheduled_at == due
    assert ran.status is Status.SUCCEEDED


def test_a_record_that_cannot_be_pickled_is_dropped_and_counted(sqlite_url, tmp_path, caplog):
    """A record holding a value that cannot be pickled (a tag that is a function) is dropped,
    counted and logged, and the records beside it are written. (Its batch used to be lost
    without a word: never sent, then taken as durable once a later batch was.)"""
    settings = TrackerSettings(flush_interval=0.02, database_writer="process", spill_dir=tmp_path)
    with Tracker(sqlite_url, settings=settings, metrics=False, watchdog=False) as tracker:
        good = [_record(tracker.instance, Status.SUCCEEDED) for _ in range(5)]
        bad = _record(tracker.instance, Status.SUCCEEDED, tags={"when": lambda: 0})
        for record in [*good[:2], bad, *good[2:]]:
            tracker.hub.record(record)
        assert tracker.flush(timeout=10)
        assert tracker.stats().dropped == {"database": 1}
        assert tracker.stats().sink_errors == {}
        assert f"dropped; the first: run {bad.run_id} of job 'job'" in caplog.text
    assert set(_statuses(sqlite_url)) == {r.run_id for r in good}


def test_a_short_flush_never_makes_a_starting_writer_act_as_if_the_service_died(
    sqlite_url, tmp_path, monkeypatch
) -> None:
    """flush(0.05) right after the writer process was killed starts another, which is not
    ready within 0.05 s: the flush returns ``False`` and the writer goes on starting. (It used
    to be given up on by closing its input, which a writer reads as the service's death: it
    marked the instance stopped and closed the live run as ``interrupted``.)"""
    from tracker.sinks.database import process_writer

    children: list[object] = []
    real_child = process_writer._Child

    def counted_child(*args: object, **kwargs: object) -> object:
        children.append(real_child(*args, **kwargs))
        return children[-1]

    monkeypatch.setattr(process_writer, "_Child", counted_child)
    sink = ProcessDatabaseSink(sqlite_url, instance="live", spill_dir=tmp_path, interval=0.02)
    try:
        running = _record("live")
        sink.handle([running])
        assert sink.flush(timeout=10)
        first = sink.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        support.wait_for(lambda: sink.pid is None)
        # (No tick here, no sink worker: only these flushes start another, after 1 s.)
        deadline = time.monotonic() + 5
        while sink.restarts == 0:
            assert time.monotonic() < deadline
            sink.flush(timeout=0.05)  # (true: nothing is pending)
        support.wait_for(lambda: (sink.tick(), sink.healthy)[1], timeout=15)
        assert len(children) == 2, "the writer started by flush() was given up on"
        assert _statuses(sqlite_url) == {running.run_id: "running"}
        with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
            stopped = conn.execute(
                "SELECT stopped_at FROM tracker_instances WHERE instance = 'live'"
            ).fetchone()
        assert stopped == (None,)
    finally:
        sink.close(timeout=5)


@pytest.mark.parametrize("next_writer", ["thread", "process"])
def test_a_run_spilled_by_the_service_is_written_as_it_ended(
    sqlite_url, tmp_path, next_writer
) -> None:
    """The writer process stops answering (SIGSTOP) while a run is announced ``running`` and
    then ends: close() spills both from the service's side, and the next tracker writes the
    run ``succeeded`` (the first state read used to win: the run stayed ``running``, or was
    closed as interrupted) — in the same service, with either writer (a writer process takes
    what its service spilled, though the service still runs)."""
    sink = ProcessDatabaseSink(sqlite_url, instance="spilled", spill_dir=tmp_path, interval=0.02)
    writer = _stop_writer(sink)
    try:
        running = _record("spilled")
        sink.handle([running])
        sink.handle([_ended(running)])
        sink.close(timeout=1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer, signal.SIGCONT)
    assert list(tmp_path.glob("*service.jsonl")), "spilled from the service's side"
    settings = TrackerSettings(spill_dir=tmp_path, database_writer=next_writer)
    with Tracker(sqlite_url, settings=settings) as again:
        assert again.flush(timeout=10)
    assert _statuses(sqlite_url) == {running.run_id: "succeeded"}


@pytest.mark.parametrize("order", ["running-first", "final-first"])
def test_a_spill_file_with_both_states_of_a_run_loads_the_final_one(
    sqlite_url, tmp_path, order
) -> None:
    """A spill file holding a run's ``running`` state and its final one (as the writer
    process's service wrote them) is written as the run ended, whatever their order."""
    from tracker.sinks.database import spill

    Tracker(sqlite_url, settings=TrackerSettings(spill_dir=tmp_path / "none")).close()
    running = _record("earlier")
    states = [running, _ended(running)]
    if order == "final-first":
        states.reverse()
    spill.spill(tmp_path, sqlite_url, "earlier+service", states)
    with Tracker(sqlite_url, settings=TrackerSettings(spill_dir=tmp_path)) as again:
        assert again.flush(timeout=10)
    assert _statuses(sqlite_url) == {running.run_id: "succeeded"}
    assert not list(tmp_path.glob("*.jsonl"))


@pytest.mark.postgres
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_the_heartbeat_is_written_while_runs_keep_coming(postgres_url, tmp_path, writer) -> None:
    """Runs keep coming while each write takes longer than the flush interval (PostgreSQL 5 ms
    away): the instance's heartbeat is still written every ``heartbeat_interval``, with either
    writer. (The tick that writes it waited for the input to run dry: other trackers would
    have taken this live instance for dead, and closed its runs as interrupted.)"""
    proxy = support.PostgresProxy(delay=0.005)
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    settings = TrackerSettings(
        flush_interval=0.02, heartbeat_interval=0.3, database_writer=writer, spill_dir=tmp_path
    )
    tracker = Tracker(url, settings=settings, metrics=False, watchdog=False)
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            support.ok_job()
            time.sleep(0.001)

    streaming = threading.Thread(target=stream)
    engine = create_engine(postgres_url)
    ages: list[float] = []
    try:
        streaming.start()
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            time.sleep(0.1)
            with engine.connect() as conn:
                beat = conn.execute(
                    select(instances.c.heartbeat_at).where(instances.c.instance == tracker.instance)
                ).scalar_one()
            ages.append((datetime.now(UTC) - beat.replace(tzinfo=UTC)).total_seconds())
    finally:
        stop.set()
        streaming.join()
        tracker.close()
        engine.dispose()
        proxy.stop()
    assert max(ages[5:]) < 1.5, [round(age, 1) for age in ages]


def test_the_writer_process_works_with_standard_error_closed(sqlite_url, tmp_path) -> None:
    """A service started with its standard error closed (``2>&-``, as some daemonisers leave
    it) uses the writer process (which used to fail at start: reported, wrongly, as not
    started within 60 s)."""
    service = textwrap.dedent(
        """
        import sys
        import support
        from tracker import Tracker, TrackerSettings
        assert sys.stderr is None
        settings = TrackerSettings(database_writer="process", spill_dir=sys.argv[2])
        with Tracker(sys.argv[1], settings=settings, metrics=False) as tracker:
            support.ok_job()
            print(tracker.flush(timeout=10), flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])}
    closed_stderr = ["/bin/sh", "-c", 'exec "$0" "$@" 2>&-']
    done = subprocess.run(
        [*closed_stderr, sys.executable, "-c", service, sqlite_url, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == "True\n", done
    assert list(_statuses(sqlite_url).values()) == ["succeeded"]


def test_a_writer_that_exits_at_start_is_reported_as_exited(
    sqlite_url, tmp_path, monkeypatch
) -> None:
    """A writer process that exits at once is reported so, at once (it used to be reported
    as not started within the 60 s start timeout)."""
    from tracker.sinks.database import process_writer

    monkeypatch.setattr(process_writer, "_BOOTSTRAP", "import sys; sys.exit(3)")
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as raised:
        ProcessDatabaseSink(sqlite_url, instance="x", spill_dir=tmp_path)
    assert time.monotonic() - started < 10
    assert "exited at start (exit code 3)" in str(raised.value)
    assert "within" not in str(raised.value)


def test_close_returns_within_its_timeout_when_the_writer_does_not_answer(
    sqlite_url, tmp_path
) -> None:
    """The writer process stops answering (SIGSTOP: a database call that never returns):
    close(1.0) returns within about 1 s (it took a second more), and the records it could not
    make durable are spilled, then written by the next tracker."""
    settings = TrackerSettings(flush_interval=0.02, database_writer="process", spill_dir=tmp_path)
    tracker = Tracker(sqlite_url, settings=settings, metrics=False, watchdog=False)
    sink = tracker.database
    assert isinstance(sink, ProcessDatabaseSink)
    writer = _stop_writer(sink)
    try:
        for _ in range(5):
            support.ok_job()
        support.wait_for(lambda: sink.pending == 5)
        started = time.monotonic()
        tracker.close(timeout=1.0)
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(writer, signal.SIGCONT)
    assert took < 1.5, f"close(timeout=1.0) took {took:.2f} s"
    with Tracker(sqlite_url, settings=TrackerSettings(spill_dir=tmp_path)) as again:
        assert again.flush(timeout=10)
        assert len(again.executions(job_id="ok_job")) == 5
