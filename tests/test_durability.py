"""Nothing recorded is lost: restarts, job stores, killed processes, database outages."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
import support
from apscheduler.schedulers.background import BackgroundScheduler
from conftest import POSTGRES_URL, need, postgres_problem
from sqlalchemy import create_engine, func, select, text, update

from tracker import Execution, Origin, Status, Tracker, TrackerSettings
from tracker.sinks.database import create_tracker_engine, executions, instances
from tracker.sinks.database.writer import DatabaseSink

HERE = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


def proc(*args: str, wait: bool = True) -> subprocess.Popen[bytes]:
    """Run tests/proc_scheduler.py in a new interpreter (output discarded unless it fails)."""
    p = subprocess.Popen(
        [sys.executable, str(HERE / "proc_scheduler.py"), *args],
        env=ENV,
        stdout=subprocess.PIPE if wait else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if wait else subprocess.DEVNULL,
    )
    if wait:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out.decode()
    return p


@pytest.fixture(params=["sqlalchemy", "redis"])
def jobstore(request, tmp_path) -> str:
    if request.param == "sqlalchemy":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    try:
        import redis

        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    except Exception as exc:
        need(f"Redis not reachable at 127.0.0.1:6379: {exc}")
    return f"redis://127.0.0.1:6379/15#tracker-test-{uuid.uuid4().hex[:8]}"


class Writer(NamedTuple):
    setting: str
    """``database_writer``"""
    metrics: bool
    """With metrics (the default), the database gets records; without, run rows."""


@pytest.fixture(
    params=[Writer("thread", True), Writer("thread", False), Writer("process", False)],
    ids=["thread", "thread-run-rows", "process"],
)
def writer(request) -> Writer:
    """Where rows are written: the service's process (given records, or only run rows when
    the database is the only sink), or the writer process."""
    return request.param  # type: ignore[no-any-return]


def test_job_store_restores_the_tracked_function(database_url, jobstore, tmp_path) -> None:
    """A job stored by one process and run by a new one is still tracked from inside the run."""
    out = tmp_path / "run_id.txt"
    proc("add", database_url, jobstore, str(out))
    proc("run", database_url, jobstore, str(out))
    run_id = out.read_text()
    assert run_id, "the restored job function was not the tracked wrapper"
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(executions).where(executions.c.run_id == run_id)).one()
    finally:
        engine.dispose()
    assert row.job_id == "persisted" and row.status == "succeeded" and row.origin == "scheduled"


def _running_rows(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(executions.c.run_id, executions.c.status, executions.c.instance)
            ).all()
    except Exception:
        return {}
    finally:
        engine.dispose()
    return {r.instance: r.status for r in rows}


def test_killed_process_rows_become_interrupted(database_url, tmp_path) -> None:
    """A run left `running` by a killed process is closed as interrupted at the next start;
    a live instance's run is untouched."""
    dead_marker, live_marker = tmp_path / "dead", tmp_path / "live"
    dead = proc("hang", database_url, str(dead_marker), wait=False)
    live = proc("hang", database_url, str(live_marker), wait=False)
    try:
        support.wait_for(lambda: dead_marker.exists() and live_marker.exists(), timeout=30)
        support.wait_for(
            lambda: list(_running_rows(database_url).values()).count("running") == 2, timeout=15
        )
        dead.send_signal(signal.SIGKILL)
        dead.wait(10)
        with Tracker(database_url) as tracker:
            rows = {r.job_id + str(i): r for i, r in enumerate(tracker.executions())}
            statuses = sorted(r.status for r in rows.values())
            assert statuses == [Status.INTERRUPTED, Status.RUNNING]
            interrupted = next(r for r in rows.values() if r.status is Status.INTERRUPTED)
            assert f":{dead.pid}/" in interrupted.instance
            assert "stopped while it was in progress" in interrupted.error_message
            assert interrupted.finished_at is not None
            # It started after the dead process's last heartbeat: it cannot end before it began.
            assert interrupted.started_at is not None
            assert interrupted.finished_at >= interrupted.started_at
    finally:
        for p in (dead, live):
            if p.poll() is None:
                p.kill()
            p.wait(10)


def _killed_mid_run(url: str, tmp_path: Path, instance: str) -> subprocess.Popen[bytes]:
    """A process of the tracker instance ``instance`` killed (SIGKILL) while its run of the job
    ``hanging`` was written ``running``."""
    marker = tmp_path / "hang"
    killed = proc("hang", url, str(marker), instance, wait=False)
    try:
        support.wait_for(marker.exists, timeout=30)
        support.wait_for(lambda: _running_rows(url).get(instance) == "running", timeout=15)
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
    finally:
        if killed.poll() is None:
            killed.kill()
        killed.wait(10)
    return killed


def test_a_fixed_instance_ids_runs_left_running_are_interrupted_when_it_starts_again(
    database_url, tmp_path
) -> None:
    """``Tracker(instance="svc-a")``, killed mid-run and started again under the same id: the
    run the killed process left ``running`` is closed as interrupted (the new process takes the
    id over; it used to keep that row running for good)."""
    killed = _killed_mid_run(database_url, tmp_path, "svc-a")
    with Tracker(database_url, instance="svc-a") as tracker:
        assert tracker.flush(10)
        (row,) = tracker.executions(job_id="hanging")
    assert row.status is Status.INTERRUPTED
    assert row.error_type == "tracker.ProcessDied"
    assert f"process {killed.pid}" in (row.error_message or "")


def test_a_takeover_that_fails_half_way_still_closes_the_earlier_runs(sqlite_url, tmp_path) -> None:
    """The tracker of a fixed instance id, started again after its process was killed, takes the
    id over, and then closing the killed process's ``running`` rows fails (the database went
    away for a moment): it is done once the database answers again. (It was dropped: the row
    stayed ``running`` for good.)"""
    killed = _killed_mid_run(sqlite_url, tmp_path, "svc-b")
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path, isolation_level=None) as conn:
        # While a row is in `refuse_updates`, changing a run's status fails: the takeover's
        # first step (the instance row) is written, the closing of the runs is not.
        conn.execute("CREATE TABLE refuse_updates (x)")
        conn.execute("INSERT INTO refuse_updates VALUES (1)")
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF status ON job_executions "
            "WHEN EXISTS (SELECT 1 FROM refuse_updates) BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    settings = TrackerSettings(flush_interval=0.02, spill_dir=tmp_path / "spill")
    with Tracker(sqlite_url, instance="svc-b", settings=settings) as tracker:
        assert not tracker.flush(0.3)
        assert _running_rows(sqlite_url) == {"svc-b": "running"}
        with sqlite3.connect(path, isolation_level=None) as conn:
            conn.execute("DELETE FROM refuse_updates")
        assert tracker.flush(10)
        (row,) = tracker.executions(job_id="hanging")
    assert row.status is Status.INTERRUPTED
    assert f"process {killed.pid}" in (row.error_message or "")


def test_a_fixed_instance_stopped_again_while_the_database_is_down_keeps_every_spill(
    sqlite_url, tmp_path, writer
) -> None:
    """A service under a fixed instance id stops while its database is down, starts and stops
    again while it is still down: each stop's records are kept, and all are written once it is
    back (the second spill replaced the first's file: its records were lost, silently)."""
    settings = TrackerSettings(
        flush_interval=0.02, spill_dir=tmp_path, database_writer=writer.setting
    )
    Tracker(sqlite_url, settings=settings, instance="svc").close()  # the tables
    path = sqlite_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    ran = 0
    try:
        for stop in range(2):
            tracker = Tracker(sqlite_url, settings=settings, instance="svc", metrics=writer.metrics)
            for _ in range(stop + 2):
                support.ok_job()
                ran += 1
            tracker.close(timeout=1)
    finally:
        holder.execute("COMMIT")
        holder.close()
    with Tracker(sqlite_url, settings=settings, instance="svc") as again:
        assert again.flush(timeout=10)
        rows = again.executions(job_id="ok_job")
    assert len(rows) == ran
    assert {row.status for row in rows} == {Status.SUCCEEDED}
    assert not list(tmp_path.glob("*.jsonl")), "every spill file is gone once written"


def test_a_live_instance_whose_heartbeat_stopped_keeps_its_runs(database_url) -> None:
    """An instance whose heartbeat stopped (the database was out of reach for longer than
    ``stale_after``) but whose process still runs on this host keeps its runs: another tracker
    starting does not close them. And where one was closed all the same (by a tracker on another
    host, which can only go by the heartbeat), the run's real end replaces that inference."""
    tracker = Tracker(database_url, settings=TrackerSettings(flush_interval=0.02))
    release = [threading.Event(), threading.Event()]
    jobs = [threading.Thread(target=support.wait_job, args=(event,)) for event in release]
    try:
        for job in jobs:
            job.start()
        support.wait_for(lambda: len(tracker.hub.live_runs()) == 2)
        assert tracker.flush(10)  # both `running` rows written
        engine = create_engine(database_url)
        try:
            with engine.begin() as conn:  # as after a long outage: last seen 10 minutes ago
                conn.execute(
                    update(instances)
                    .where(instances.c.instance == tracker.instance)
                    .values(heartbeat_at=datetime.now(UTC) - timedelta(minutes=10))
                )
            settings = TrackerSettings(stale_after=1, heartbeat_interval=0.5)
            with Tracker(database_url, settings=settings) as other:
                assert other.flush(10)
                assert [r.status for r in other.executions(job_id="wait_job")] == [
                    Status.RUNNING
                ] * 2
            with engine.begin() as conn:  # what a tracker on another host would do
                second = tracker.hub.live_runs()[1].run_id
                conn.execute(
                    update(executions)
                    .where(executions.c.run_id == second)
                    .values(status="interrupted", error_type="tracker.ProcessDied")
                )
        finally:
            engine.dispose()
    finally:
        for event in release:
            event.set()
        for job in jobs:
            job.join(10)
    assert tracker.flush(10)
    rows = tracker.executions(job_id="wait_job")
    tracker.close()
    assert [r.status for r in rows] == [Status.SUCCEEDED] * 2


def test_a_late_running_state_never_reopens_an_inferred_interruption(database_url) -> None:
    """A run closed as interrupted because its process was taken for dead: its real end
    replaces that, but a `running` state arriving late (retried, or from a spill file) does
    not — the instance is marked stopped by then, and nothing would close the row again."""
    from tracker import Execution
    from tracker._ids import new_run_id

    with Tracker(database_url, settings=TrackerSettings(flush_interval=0.02)) as tracker:
        now = datetime.now(UTC)
        running = Execution(
            run_id=new_run_id(),
            job_id="late",
            job_name="late",
            status=Status.RUNNING,
            scheduled_at=now,
            started_at=now,
            instance=tracker.instance,
        )
        tracker.hub.record(running)
        assert tracker.flush(10)
        engine = create_engine(database_url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    update(executions)
                    .where(executions.c.run_id == running.run_id)
                    .values(status="interrupted", error_type="tracker.ProcessDied")
                )
        finally:
            engine.dispose()
        tracker.hub.record(running)
        assert tracker.flush(10)
        assert tracker.execution(running.run_id).status is Status.INTERRUPTED
        ended = running._replace(
            status=Status.SUCCEEDED, finished_at=now + timedelta(seconds=1), duration_s=1.0
        )
        tracker.hub.record(ended)
        assert tracker.flush(10)
        assert tracker.execution(running.run_id).status is Status.SUCCEEDED


def test_which_instances_count_as_dead() -> None:
    """On this host and process id namespace, an instance is dead when its process is gone or
    the process now under its id started after it (the id was reused), and alive while its
    process runs, whatever its heartbeat. Under another namespace with the same host name
    (containers with host networking), its process id means nothing here: the heartbeat
    decides."""
    from tracker.sinks.database.writer import host_key, instance_dead

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    now = datetime.now(UTC)
    old, fresh = now - timedelta(minutes=10), now
    here, elsewhere = host_key(), f"{socket.gethostname()} pidns:1"
    assert instance_dead(here, gone.pid, old, fresh, 60)
    assert not instance_dead(here, os.getpid(), fresh, old, 60)  # an outage stopped its heartbeat
    assert instance_dead(here, os.getpid(), now - timedelta(days=1), fresh, 60)  # id reused
    assert not instance_dead(elsewhere, gone.pid, old, fresh, 60)
    assert instance_dead(elsewhere, os.getpid(), old, old, 60)


def _run_ids(tracker: Tracker) -> list[str]:
    """The run ids of job ``ok``'s runs, from its rows (its ``missed`` rows, fire times the
    scheduler coalesced while the machine was busy, stand for no run and are left out)."""
    rows = [r for r in tracker.executions(limit=100_000) if r.job_id == "ok"]
    assert {r.status for r in rows} <= {Status.SUCCEEDED, Status.MISSED}
    return sorted(r.run_id for r in rows if r.status is Status.SUCCEEDED)


def _run_through_outage(tracker: Tracker, block, unblock) -> None:
    support.RUNS.clear()
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.add_job(support.ok_job, "interval", seconds=0.03, id="ok")
    scheduler.start()
    try:
        support.wait_for(lambda: len(support.RUNS) >= 5)
        block()
        during = len(support.RUNS)
        time.sleep(1.2)
        ran_while_down = len(support.RUNS) - during
        support.wait_for(lambda: tracker.database.pending > 0)
        assert tracker.database.last_error, "the outage was noticed"
        unblock()
        time.sleep(0.2)
    finally:
        scheduler.shutdown(wait=True)
    assert ran_while_down >= 10, "jobs kept running while the database was down"
    assert tracker.flush(timeout=20)
    assert _run_ids(tracker) == sorted(support.RUNS)  # every run, once
    assert sum(tracker.stats().dropped.values()) == 0


def test_sqlite_locked_database_loses_nothing(sqlite_url, writer) -> None:
    """While another connection holds SQLite's write lock, records wait and all arrive after."""
    tracker = Tracker(
        sqlite_url,
        settings=TrackerSettings(flush_interval=0.02, database_writer=writer.setting),
        metrics=writer.metrics,
    )
    path = sqlite_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _run_through_outage(
            tracker, lambda: holder.execute("BEGIN EXCLUSIVE"), lambda: holder.execute("COMMIT")
        )
    finally:
        holder.close()
        tracker.close()


@pytest.fixture(autouse=True)
def _collect_killed_connections() -> Iterator[None]:
    """These tests refuse, kill or silence the database under the tracker on purpose. A
    connection a write was in when that happened is left to the garbage collector to close,
    once the thread left in it ends, and psycopg then warns (``ResourceWarning``, an error
    under this suite's settings). Collected here, at the end of the test that did it, rather
    than in whichever test the collector happens to run in next."""
    yield
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and any(
        t.name.startswith("tracker-database") for t in threading.enumerate()
    ):
        time.sleep(0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def postgres_database():
    """A whole PostgreSQL database of its own (so the test can refuse connections to it)."""
    problem = postgres_problem()
    if problem:
        need(problem)
    name = f"tracker_outage_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"

    def set_allowed(allowed: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": name},
                )

    yield url, set_allowed
    set_allowed(False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.mark.postgres
def test_postgres_outage_loses_nothing(postgres_database, writer) -> None:
    """While PostgreSQL refuses connections, records wait, jobs carry on, and all arrive after."""
    url, set_allowed = postgres_database
    tracker = Tracker(
        url,
        settings=TrackerSettings(flush_interval=0.02, database_writer=writer.setting),
        metrics=writer.metrics,
    )
    try:
        _run_through_outage(tracker, lambda: set_allowed(False), lambda: set_allowed(True))
        # Seen as an outage and retried, not as the sink breaking.
        assert tracker.database.last_error is not None
        assert tracker.stats().sink_errors.get("database", 0) == 0
    finally:
        tracker.close()


def test_full_buffer_drops_are_counted_and_logged(sqlite_url, caplog, writer) -> None:
    """Past the buffer bound, new records are dropped, counted and logged, and jobs still run."""
    tracker = Tracker(
        sqlite_url,
        settings=TrackerSettings(
            flush_interval=0.02, buffer_size=100, database_writer=writer.setting
        ),
        metrics=writer.metrics,
    )
    path = sqlite_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        for _ in range(150):
            assert support.ok_job() == "ok"
        support.wait_for(lambda: tracker.stats().dropped.get("database", 0) > 0)
        holder.execute("COMMIT")
        assert tracker.flush(timeout=10)
    finally:
        holder.close()
        tracker.close()
    assert "dropped" in caplog.text


def test_clean_shutdown_loses_nothing(tracker_factory, writer) -> None:
    """Close right after a burst of runs: every one of them is in the database."""
    tracker = tracker_factory(
        flush_interval=1.0, database_writer=writer.setting, metrics=writer.metrics
    )
    for _ in range(500):
        support.ok_job()
    tracker.close()
    reopened = tracker_factory()
    assert len(reopened.executions(job_id="ok_job", limit=10_000)) == 500


def test_shutdown_mid_run_records_interrupted(tracker, database_url) -> None:
    """A run still going when the tracker closes is recorded as interrupted, not left running."""
    started = threading.Event()

    def job() -> None:
        from tracker import tracked_job

        @tracked_job
        def long_one() -> None:
            started.set()
            time.sleep(0.5)

        long_one()

    thread = threading.Thread(target=job)
    thread.start()
    started.wait(5)
    tracker.close()
    thread.join()
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(executions.c.status, executions.c.origin)).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("interrupted", Origin.DIRECT.value)]


# The longest instance id a tracker takes, with characters a file name can't hold as they are.
_LONG_INSTANCE = "ü/" * 127 + "x"


@pytest.mark.postgres
@pytest.mark.parametrize("instance", [None, _LONG_INSTANCE], ids=["default", "long-instance"])
def test_records_pending_at_shutdown_survive_an_outage(
    postgres_database, tmp_path, writer, instance
) -> None:
    """Database down at a clean shutdown: records are spilled, and written at the next start
    (with the instance that recorded them, even one whose id is too long for a file name)."""
    url, set_allowed = postgres_database
    settings = TrackerSettings(
        flush_interval=0.02, spill_dir=tmp_path, database_writer=writer.setting
    )
    tracker = Tracker(url, settings=settings, instance=instance, metrics=writer.metrics)
    set_allowed(False)
    for _ in range(20):
        support.ok_job()
    tracker.close(timeout=1)
    assert list(tmp_path.glob("*.jsonl")), "pending records were spilled"
    set_allowed(True)
    with Tracker(url, settings=settings) as again:
        assert again.flush(timeout=10)
        rows = again.executions(job_id="ok_job")
        assert len(rows) == 20
        assert {row.instance for row in rows} == {tracker.instance}
    assert not list(tmp_path.glob("*.jsonl")), "the spill file is gone once written"


def test_a_record_the_database_refuses_holds_back_nothing(tracker_factory, writer, caplog) -> None:
    """Records the database refuses don't block the others behind them, retried forever: text
    PostgreSQL cannot hold (a NUL character, a job id past its column's 255 characters) or no
    driver can send (a lone surrogate) is stored made storable, and a record nothing can store
    (no job id) is dropped, counted and logged, while the rest of its batch is written."""
    from datetime import UTC, datetime

    from tracker import Execution
    from tracker._ids import new_run_id

    tracker = tracker_factory(database_writer=writer.setting, metrics=writer.metrics)
    postgres = tracker.engine.dialect.name == "postgresql"
    now = datetime.now(UTC)

    def record(job_id: str | None, **fields: object) -> Execution:
        return Execution(
            run_id=new_run_id(),
            job_id=job_id,  # type: ignore[arg-type]
            job_name="ledger",
            status=Status.FAILED,
            scheduled_at=now,
            started_at=now,
            finished_at=now,
            duration_s=0.5,
            **fields,  # type: ignore[arg-type]
        )

    good = [record(f"good-{n}") for n in range(50)]
    nul = record("nul", error_message="ledger\x00 7 is locked", tags={"team": "bil\x00ling"})
    long = record("j" * 300)
    broken = record(None)
    undecodable = record("files", error_message="no such file: 'caf\udce9.txt'")  # os.fsdecode
    for r in [*good[:25], nul, broken, long, undecodable, *good[25:]]:
        tracker.hub.record(r)
    assert tracker.flush(timeout=20)
    stored = {r.run_id: r for r in tracker.executions(limit=1000)}
    for r in good:
        assert stored[r.run_id] == r.evolve(instance=stored[r.run_id].instance)
    assert broken.run_id not in stored
    assert tracker.stats().dropped == {"database": 1}
    if writer == "thread":  # (a writer process logs to its own stderr)
        assert f"refused 1 record(s), dropped; the first: run {broken.run_id}" in caplog.text
    got_nul, got_long = stored[nul.run_id], stored[long.run_id]
    # a lone surrogate is not UTF-8: neither driver can send it
    assert stored[undecodable.run_id].error_message == "no such file: 'caf\ufffd.txt'"
    if postgres:
        assert got_nul.error_message == "ledger\ufffd 7 is locked"
        assert dict(got_nul.tags) == {"team": "bil\ufffdling"}
    else:  # SQLite stores a NUL as it is
        assert got_nul.error_message == "ledger\x00 7 is locked"
    # Past its column's 255 characters, a job id is cut, the head kept and a hash of the whole
    # id after it, on every backend; reading the history by the whole id finds its runs.
    assert len(got_long.job_id) == 255 and got_long.job_id.startswith("j" * 200)
    assert got_long.job_id != "j" * 255
    assert [r.run_id for r in tracker.executions(job_id="j" * 300)] == [long.run_id]


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["reset-then-silent", "silent"])
def test_close_while_the_database_is_silent_keeps_every_record(postgres_url, tmp_path, how) -> None:
    """The database stops answering (connections accepted, nothing ever sent back) while the
    sink's thread is writing: close(timeout) still returns within about its timeout, and every
    record it could not write is spilled (the batch being written too) and written at the next
    start. "reset-then-silent": new connections hang until the URL's connect_timeout, after
    close() has returned; "silent": the pooled connection's queries never return at all."""
    proxy = support.PostgresProxy()
    proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    if how == "reset-then-silent":
        proxied += "&connect_timeout=3"
    spill_dir = tmp_path / "spill"
    settings = TrackerSettings(flush_interval=0.02, spill_dir=spill_dir)
    tracker = Tracker(proxied, settings=settings)
    try:
        for _ in range(100):
            support.ok_job()
        assert tracker.flush(timeout=10)
        proxy.go_silent(reset=how == "reset-then-silent")
        for _ in range(300):
            support.ok_job()
        time.sleep(0.3)  # the sink's thread is in a write that will not end before close()
        closer = threading.Thread(target=tracker.close, kwargs={"timeout": 2}, daemon=True)
        started = time.monotonic()
        closer.start()
        closer.join(10)
        took = time.monotonic() - started
        assert not closer.is_alive(), "close(timeout=2) did not return"
        assert tracker.stats().dropped == {}
        assert tracker.database.pending == 0
        assert list(spill_dir.glob("*.jsonl")), "what was not written is spilled"
        time.sleep(1.5)  # a hung write failing after close() must not lose what it held
        proxy.restore()
        with Tracker(proxied, settings=settings) as again:  # (spill files are per URL)
            assert again.flush(timeout=10)
    finally:
        proxy.stop()
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            count = conn.execute(
                select(func.count()).where(executions.c.instance == tracker.instance)
            ).scalar()
    finally:
        engine.dispose()
    assert count == 400
    assert not list(spill_dir.glob("*.jsonl")), "the spill file is gone once written"
    assert took < 3.5, f"close(timeout=2) took {took:.1f}s"


def test_records_that_cannot_be_spilled_are_counted_as_dropped(tmp_path, caplog) -> None:
    """Database locked at close() and the spill directory not writable: the records are lost,
    and that is logged and counted (``stats().dropped``, ``jobtracker_records_dropped_total``)."""
    blocker = tmp_path / "spill"
    blocker.write_text("a file, not a directory")  # mkdir under it fails, even as root
    url = f"sqlite:///{tmp_path / 'tracker.sqlite3'}"
    settings = TrackerSettings(flush_interval=0.02, spill_dir=blocker / "sub")
    tracker = Tracker(url, settings=settings)
    holder = sqlite3.connect(tmp_path / "tracker.sqlite3", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        for _ in range(50):
            support.ok_job()
        tracker.close(timeout=1)
    finally:
        holder.close()
    assert tracker.stats().dropped == {"database": 50}
    assert "nor spill them" in caplog.text


def _in_a_forked_child(work: Callable[[], dict[str, object]]) -> dict[str, object]:
    """What ``work()`` reports, run in a process forked from this one (which never returns
    into pytest)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.write(write, json.dumps(work()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report: dict[str, object] = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    return report


def test_a_forked_process_never_acts_as_the_parent(sqlite_url, tmp_path, caplog) -> None:
    """A process forked after the tracker was created (gunicorn --preload) has none of its
    threads: there the tracker stops, saying so, tracked jobs run untracked, and nothing there
    acts as the parent's instance (its close() doesn't mark the parent's instance stopped, which
    would leave the parent's running rows open for good if the parent were then killed)."""
    tracker = Tracker(
        sqlite_url, settings=TrackerSettings(flush_interval=0.02, spill_dir=tmp_path / "spill")
    )
    try:
        for _ in range(10):
            support.ok_job()
        assert tracker.flush(timeout=5)

        def in_the_child() -> dict[str, object]:
            ran = [support.ok_job() for _ in range(100)]
            report = {
                "ran": ran == ["ok"] * 100,
                "closed": tracker.hub.closed,
                "flush": tracker.flush(timeout=1),
                "logged": "Create the Tracker after the fork" in caplog.text,
            }
            tracker.close(timeout=2)
            return report

        report = _in_a_forked_child(in_the_child)
        assert report == {"ran": True, "closed": True, "flush": False, "logged": True}
        assert not tracker.hub.closed
        for _ in range(5):
            support.ok_job()
        assert tracker.flush(timeout=5)
        assert len(tracker.executions(job_id="ok_job", limit=1000)) == 15
        engine = create_engine(sqlite_url)
        try:
            with engine.connect() as conn:
                stopped = conn.execute(
                    select(instances.c.stopped_at).where(instances.c.instance == tracker.instance)
                ).scalar_one()
        finally:
            engine.dispose()
        assert stopped is None, "the child marked the parent's instance stopped"
    finally:
        tracker.close()


@pytest.mark.postgres
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_a_forked_process_reads_the_history_on_connections_of_its_own(
    postgres_url, tmp_path, writer
) -> None:
    """Workers forked after the tracker was created (gunicorn --preload) that read the history
    (the HTTP API) do it on connections of their own: on the parent's pooled connection, two
    processes would talk over one socket (seen as "server closed the connection
    unexpectedly" in workers reading at once), with either database writer."""
    tracker = Tracker(
        postgres_url,
        settings=TrackerSettings(database_writer=writer, spill_dir=tmp_path / "spill"),
        metrics=False,
    )
    backend = "SELECT pg_backend_pid()"
    try:
        support.ok_job()
        assert tracker.flush(timeout=10)
        with tracker.engine.connect() as conn:  # back into the pool: the one a read would take
            parent_backend = conn.exec_driver_sql(backend).scalar_one()

        def in_the_child() -> dict[str, object]:
            with tracker.engine.connect() as conn:
                child_backend = conn.exec_driver_sql(backend).scalar_one()
            report = {
                "own": child_backend != parent_backend,
                "rows": len(tracker.executions(job_id="ok_job")),
            }
            tracker.engine.dispose()  # the worker's shutdown closes its connections
            return report

        report = _in_a_forked_child(in_the_child)
        assert report == {"own": True, "rows": 1}
        with tracker.engine.connect() as conn:
            assert conn.exec_driver_sql(backend).scalar_one() == parent_backend  # still open
    finally:
        tracker.close()


def test_a_hard_kill_during_an_outage_loses_at_most_the_last_second(
    sqlite_url, tmp_path, writer
) -> None:
    """The service is killed (SIGKILL) two seconds into a database outage: the runs recorded
    before the last second are written when a tracker starts again. (With the in-process writer
    they were in memory only: all were lost, however long the outage had lasted.)"""
    path = sqlite_url.removeprefix("sqlite:///")
    spill_dir = tmp_path / "spill"
    child = f"""
import os, signal, sqlite3, time
import support
from tracker import Tracker, TrackerSettings
tracker = Tracker({sqlite_url!r}, metrics={writer.metrics!r}, settings=TrackerSettings(
    flush_interval=0.02, spill_dir={str(spill_dir)!r}, database_writer={writer.setting!r}))
holder = sqlite3.connect({path!r}, isolation_level=None)
holder.execute("BEGIN EXCLUSIVE")
for _ in range(100):
    support.ok_job()
time.sleep(2.5)
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", child], env=ENV, timeout=60)
    assert done.returncode == -signal.SIGKILL
    with Tracker(sqlite_url, settings=TrackerSettings(spill_dir=spill_dir)) as again:
        support.wait_for(lambda: again.flush(1) and len(again.executions(job_id="ok_job")) == 100)
        rows = again.executions(job_id="ok_job")
    assert {row.status for row in rows} == {Status.SUCCEEDED}
    support.wait_for(lambda: not list(spill_dir.glob("*.jsonl")))


def _finished(n: int) -> Execution:
    return support.finished("j", datetime.now(UTC), run_id=f"run-{n}", instance="journal")


def _journaling_sink(sqlite_url: str, spill_dir: Path) -> tuple[DatabaseSink, sqlite3.Connection]:
    """A database sink whose database went away (locked) with three records waiting, which
    it added to its spill file (the outage journal); and the connection holding the lock."""
    sink = DatabaseSink(
        create_tracker_engine(sqlite_url), instance="journal", spill_dir=spill_dir, max_backoff=0.1
    )
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    sink.handle([_finished(n) for n in range(3)])
    assert not sink.healthy
    sink._next_journal = 0.0  # (tick() does it once a second)
    sink._journal_if_due()
    assert list(spill_dir.glob("*.jsonl")), "the records waiting were added to the spill file"
    return sink, holder


def test_a_write_that_ends_after_close_gave_up_leaves_the_spill_file(sqlite_url, tmp_path) -> None:
    """close() gives up on a write stuck in a locked database and spills what waits (the batch and
    two later records) to the writer's file, which the outage journal had started; the stuck
    write then succeeds. The file stays, and the next tracker writes the two records (the
    journal's end deleted it: they were lost)."""
    spill_dir = tmp_path / "spill"
    sink, holder = _journaling_sink(sqlite_url, spill_dir)
    sink._retry_at = 0.0
    stuck = threading.Thread(target=sink._write_if_due)
    stuck.start()
    support.wait_for(lambda: sink._inflight)  # in the write, waiting for the lock
    sink.handle([_finished(3), _finished(4)])
    sink.close(timeout=0.05)
    holder.execute("COMMIT")
    holder.close()
    stuck.join(10)
    with Tracker(sqlite_url, settings=TrackerSettings(spill_dir=spill_dir)) as again:
        assert again.flush(10)
        assert sorted(r.run_id for r in again.executions(job_id="j")) == [
            f"run-{n}" for n in range(5)
        ]


def test_a_spill_dir_that_cannot_be_made_does_not_fail_the_write_after_an_outage(
    sqlite_url, tmp_path, caplog
) -> None:
    """The spill folder cannot be made (its parent is a file): the outage journal fails, said
    once; the database comes back, and the write is a success — counted, healthy, nothing said
    dropped at close (deleting the journal raised there: the written batch counted as failed,
    then as dropped)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = DatabaseSink(
        create_tracker_engine(sqlite_url),
        instance="journal",
        spill_dir=blocker / "spill",
        max_backoff=0.1,
        on_drop=lambda sink_name, n: dropped.append(n),
    )
    dropped: list[int] = []
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    sink.handle([_finished(n) for n in range(3)])
    sink._next_journal = 0.0
    sink._journal_if_due()
    holder.execute("COMMIT")
    holder.close()
    assert sink.flush(10)
    assert sink.healthy and sink.written == 3
    sink.close(timeout=5)
    assert dropped == []
    assert caplog.text.count("could not keep the 3 records waiting") == 1


def test_a_tracker_starting_beside_a_live_writer_leaves_its_journal(sqlite_url, tmp_path) -> None:
    """A writer in an outage keeps what waits in its spill file; another tracker on the same
    database and machine starts meanwhile (the database answers it): it leaves that file to its
    live writer (it took it, and deleted it with what the writer added since: lost at a kill).
    Once that writer is gone, the next tracker writes what the file holds."""
    path = sqlite_url.removeprefix("sqlite:///")
    spill_dir = tmp_path / "spill"
    Tracker(sqlite_url, settings=TrackerSettings(spill_dir=tmp_path / "none")).close()
    child = f"""
import sqlite3, sys, time
from pathlib import Path
import support
from tracker import Tracker, TrackerSettings
tracker = Tracker({sqlite_url!r}, settings=TrackerSettings(flush_interval=0.02,
                  spill_dir={str(spill_dir)!r}))
holder = sqlite3.connect({path!r}, isolation_level=None)
holder.execute("BEGIN EXCLUSIVE")
for _ in range(5):
    support.ok_job()
while not list(Path({str(spill_dir)!r}).glob("*.jsonl")):
    time.sleep(0.05)
holder.execute("COMMIT")
print("journaled", flush=True)
time.sleep(60)
"""
    writer = subprocess.Popen(
        [sys.executable, "-c", child], env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "journaled"
        writer.send_signal(signal.SIGSTOP)  # alive, not writing: its file must stay its own
        with Tracker(sqlite_url, settings=TrackerSettings(spill_dir=spill_dir)) as beside:
            assert beside.flush(10)
            assert beside.executions(job_id="ok_job") == []
        assert list(spill_dir.glob("*.jsonl")), "the live writer's file is left to it"
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
        if writer.stdout is not None:
            writer.stdout.close()
    with Tracker(sqlite_url, settings=TrackerSettings(spill_dir=spill_dir)) as after:
        assert after.flush(10)
        assert len(after.executions(job_id="ok_job")) == 5


def test_a_spilled_finish_is_not_overtaken_by_interruption(sqlite_url, tmp_path) -> None:
    """A run written as ``running``, then finished while the database was locked, is spilled
    finished at close(); its process then ends. The next tracker writes the spilled record
    before closing the dead process's running rows as interrupted: the run is ``succeeded``
    (an interrupted row would refuse the finished state)."""
    path = sqlite_url.removeprefix("sqlite:///")
    spill_dir = tmp_path / "spill"
    child = f"""
import sqlite3, threading, time
from tracker import Tracker, TrackerSettings, tracked_job
tracker = Tracker({sqlite_url!r}, settings=TrackerSettings(flush_interval=0.02,
                  spill_dir={str(spill_dir)!r}))
go = threading.Event()
@tracked_job
def long_one():
    go.wait(10)
job = threading.Thread(target=long_one)
job.start()
time.sleep(0.2)
assert tracker.flush(5)  # its running row is written
holder = sqlite3.connect({path!r}, isolation_level=None)
holder.execute("BEGIN EXCLUSIVE")
go.set()
job.join()
tracker.close(timeout=1)
holder.close()
"""
    subprocess.run([sys.executable, "-c", child], env=ENV, check=True, timeout=60)
    assert list(spill_dir.glob("*.jsonl")), "the finished record was spilled"
    with Tracker(sqlite_url, settings=TrackerSettings(spill_dir=spill_dir)) as again:
        assert again.flush(timeout=10)
        assert [r.status for r in again.executions(job_id="long_one")] == [Status.SUCCEEDED]
