"""The ``tracker`` command: history, prune, db upgrade, and one-line errors for bad databases."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tracker import Execution, Status, Tracker, TrackerSettings
from tracker._ids import new_run_id
from tracker.cli import main

TRACKER = str(Path(sys.executable).with_name("tracker"))


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def seed(url: str, runs: list[tuple[str, Status, timedelta]]) -> list[Execution]:
    """Record finished runs (job, status, age) through a real tracker, then close it."""
    tracker = Tracker(
        url, settings=TrackerSettings(flush_interval=0.02), registry=CollectorRegistry()
    )
    now = datetime.now(UTC)
    made = []
    for job, status, age in runs:
        at = now - age
        e = Execution(
            run_id=new_run_id(),
            job_id=job,
            job_name=job,
            status=status,
            scheduled_at=at,
            started_at=at,
            finished_at=at + timedelta(seconds=1.5),
            duration_s=1.5,
            lateness_s=0.004,
            error_type="ValueError" if status is Status.FAILED else None,
            error_message="invoice 42\ncould not be synced" if status is Status.FAILED else None,
        )
        tracker.hub.record(e)
        made.append(e)
    tracker.close()
    return made


@pytest.fixture
def seeded(database_url: str) -> str:
    seed(
        database_url,
        [
            ("cleanup", Status.SUCCEEDED, timedelta(days=40)),
            ("cleanup", Status.FAILED, timedelta(days=35)),
            ("cleanup", Status.SUCCEEDED, timedelta(hours=3)),
            ("report", Status.FAILED, timedelta(minutes=30)),
            ("report", Status.SUCCEEDED, timedelta(minutes=5)),
        ],
    )
    return database_url


def test_history_prints_recent_runs_as_a_table(seeded: str) -> None:
    """`tracker history` shows runs newest first with status, duration and error summary."""
    code, out = run("history", "--database-url", seeded)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["SCHEDULED", "(UTC)", "JOB", "STATUS"]
    assert [line.split()[2] for line in lines[1:]] == [
        "report",
        "report",
        "cleanup",
        "cleanup",
        "cleanup",
    ]
    assert "1.50s" in lines[1]
    assert "4ms" in lines[1]
    assert "ValueError: invoice 42 could not be synced" in lines[2]


def test_history_filters(seeded: str) -> None:
    """--job, --status, --since and --limit narrow the table; --json prints one object a line."""
    _, out = run("history", "--database-url", seeded, "--job", "cleanup", "--status", "failed")
    assert len(out.splitlines()) == 2
    assert "failed" in out.splitlines()[1]
    _, out = run("history", "--database-url", seeded, "--since", "1d")
    assert len(out.splitlines()) == 4
    _, out = run("history", "--database-url", seeded, "--limit", "1", "--json")
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert (record["job_id"], record["status"]) == ("report", "succeeded")
    _, out = run("history", "--database-url", seeded, "--job", "nothing")
    assert out == "no runs match\n"


def test_history_rejects_bad_filters(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown status or unparseable time is one line on stderr and exit status 1."""
    assert run("history", "--database-url", seeded, "--status", "exploded")[0] == 1
    assert run("history", "--database-url", seeded, "--since", "soon")[0] == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("tracker: error: unknown status 'exploded'")
    assert err[1].startswith("tracker: error: --since 'soon' is not a time")


def test_prune_deletes_old_runs_and_keeps_the_newest(seeded: str) -> None:
    """--older-than removes old runs; --keep-last keeps the newest N per job."""
    code, out = run("prune", "--database-url", seeded, "--older-than", "30d")
    assert (code, out.split()[:2]) == (0, ["deleted", "2"])
    code, out = run("prune", "--database-url", seeded, "--keep-last", "1")
    assert out.split()[:2] == ["deleted", "1"]
    _, out = run("history", "--database-url", seeded)
    assert [line.split()[2:4] for line in out.splitlines()[1:]] == [
        ["report", "succeeded"],
        ["cleanup", "succeeded"],
    ]


def test_prune_needs_a_criterion(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Prune without --older-than or --keep-last refuses; a bad age is named."""
    assert run("prune", "--database-url", seeded)[0] == 1
    assert run("prune", "--database-url", seeded, "--older-than", "thirty days")[0] == 1
    err = capsys.readouterr().err
    assert "say what to delete" in err
    assert "--older-than 'thirty days' is not a duration" in err


def test_db_upgrade_creates_every_table(database_url: str) -> None:
    """`tracker db upgrade` brings an empty database to every head, including the audit table."""
    code, out = run("db", "upgrade", "--database-url", database_url)
    assert code == 0
    assert "0002_audit" in out.split(" is at revision ", 1)[1]
    from sqlalchemy import create_engine, inspect

    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"job_executions", "tracker_instances", "tracker_audit"} <= tables
    assert run("db", "upgrade", "--database-url", database_url)[0] == 0


def test_db_upgrades_started_together_on_one_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """Several `tracker db upgrade` (replicas deploying at once) on one new SQLite file take
    turns: each exits 0 and the file ends at every head (some failed with "table ... already
    exists": only PostgreSQL took a lock)."""
    from tracker.sinks.database import create_tracker_engine
    from tracker.sinks.database.migrate import current_revisions, head_revisions

    urls = [f"sqlite:///{tmp_path / f'race-{i}.sqlite3'}" for i in range(3)]
    started = [
        subprocess.Popen(
            [TRACKER, "db", "upgrade", "--database-url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for url in urls
        for _ in range(6)
    ]
    failed = [err for err, code in ((p.communicate()[1], p.returncode) for p in started) if code]
    assert failed == []
    for url in urls:
        engine = create_tracker_engine(url)
        assert current_revisions(engine) == head_revisions()
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "Invalid database URL"),
        ("sqlite:////no/such/directory/t.sqlite3", "directory /no/such/directory does not exist"),
        ("postgresql://postgres@127.0.0.1:9/test", "cannot connect to postgresql+psycopg://"),
        ("mysql://u@127.0.0.1/x", "No driver for"),
    ],
)
@pytest.mark.parametrize("command", [["history"], ["prune", "--keep-last", "1"], ["db", "upgrade"]])
def test_bad_database_urls_are_one_line_errors(
    url: str, message: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command reports a bad or unreachable database in one line, exit status 1."""
    assert run(*command, "--database-url", url)[0] == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("tracker: error: ")
    assert message in err


def test_history_on_a_missing_sqlite_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reading history does not create an empty database: it says none is there."""
    url = f"sqlite:///{tmp_path / 'absent.sqlite3'}"
    assert run("history", "--database-url", url)[0] == 1
    assert "no tracker database at" in capsys.readouterr().err
    assert not (tmp_path / "absent.sqlite3").exists()


def test_history_on_a_database_without_tables_says_to_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database without tracker tables gets a hint to run `tracker db upgrade`."""
    path = tmp_path / "empty.sqlite3"
    import sqlite3

    sqlite3.connect(path).close()
    assert run("history", "--database-url", f"sqlite:///{path}")[0] == 1
    assert "run `tracker db upgrade" in capsys.readouterr().err


def test_console_script_uses_the_environment_url(seeded: str, tmp_path: Path) -> None:
    """The installed `tracker` command reads TRACKER_DATABASE_URL; errors carry no traceback."""
    env = {**os.environ, "TRACKER_DATABASE_URL": seeded}
    done = subprocess.run(
        [TRACKER, "history", "--limit", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    env["TRACKER_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:9/test"
    failed = subprocess.run(
        [TRACKER, "history"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert failed.stderr.startswith("tracker: error: cannot connect to")
    usage = subprocess.run(
        [TRACKER, "prune", "--keep-last", "many"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert usage.returncode == 2
    assert "invalid int value: 'many'" in usage.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--port", "99999"], "--port must be from 0 to 65535, got 99999"),
        (["demo", "--port", "-1"], "--port must be from 0 to 65535, got -1"),
        (["demo", "--interval-scale", "nan"], "--interval-scale must be above 0 and at most"),
        (["demo", "--interval-scale", "1e12"], "--interval-scale must be above 0 and at most"),
        (["history", "--limit", str(2**64)], "--limit must be from 1 to 1,000,000,000"),
    ],
)
def test_out_of_range_arguments_are_one_line_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Numbers argparse takes but nothing can use (a port past 65535, an infinite or NaN
    scale, a limit past SQLite's integers) are one line and exit status 1, not a traceback."""
    import logging

    level = logging.getLogger("apscheduler").level
    code, _ = run(*argv, "--database-url", f"sqlite:///{tmp_path}/t.sqlite3")
    assert code == 1
    assert capsys.readouterr().err.startswith(f"tracker: error: {message}")
    assert logging.getLogger("apscheduler").level == level  # refused: nothing else changed


def test_history_piped_into_head_stops_quietly(seeded: str) -> None:
    """``tracker history --json | head -1``: when the reader goes away the command stops with
    status 141 (as a command killed by SIGPIPE), without a BrokenPipeError traceback."""
    many = [("bulk", Status.SUCCEEDED, timedelta(minutes=n)) for n in range(2000)]
    seed(seeded, many)
    shell = f"{TRACKER} history --json --limit 3000 --database-url '{seeded}' | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=60
    )
    assert json.loads(done.stdout)["job_id"]
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_a_variable_that_should_hold_json_is_a_one_line_error(
    seeded: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TRACKER_METRICS_DURATION_BUCKETS=1,2,3`` (not JSON) names the variable and the value."""
    monkeypatch.setenv("TRACKER_METRICS_DURATION_BUCKETS", "1,2,3")
    from tracker import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        Tracker(seeded)
    assert str(raised.value).startswith(
        "invalid MetricsSettings: duration_buckets (TRACKER_METRICS_DURATION_BUCKETS): "
        "not valid JSON"
    )
    assert str(raised.value).endswith("; got '1,2,3'")
