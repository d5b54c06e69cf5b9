"""Durable ingest: runs per second through the tracker into SQLite and PostgreSQL.

Each run is a direct call of a @tracked_job function (one finished record, since the
runs are short, through the hub to the database sink's background writer); the clock stops when
``flush()`` reports everything durable, and the rows are counted afterwards.

    python bench/ingest.py [--runs 200000] [--postgres URL]

Bar (issue 2): >= 20,000 durable runs/s on each backend, every row present. Each backend is
measured with the in-process writer and with the writer process (``database_writer``), with the
default sinks (database and metrics), and with the writer process alone (``metrics=False``):
the hub then sends it run rows, and it makes the records and their ids (every row present
means every id was unique).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid

from sqlalchemy import create_engine, func, select, text

from tracker import Tracker, TrackerSettings, tracked_job
from tracker.sinks.database import executions

DEFAULT_PG = os.environ.get(
    "TRACKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@tracked_job
def trivial() -> None:
    return None


def run(url: str, runs: int, writer: str, metrics: bool) -> tuple[float, int]:
    tracker = Tracker(
        url,
        settings=TrackerSettings(buffer_size=max(100_000, runs * 2), database_writer=writer),
        metrics=metrics,
    )
    try:
        started = time.perf_counter()
        for _ in range(runs):
            trivial()
        ok = tracker.flush(timeout=300)
        elapsed = time.perf_counter() - started
        assert ok, "flush timed out"
        with tracker.engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(executions)).scalar_one()
        dropped = sum(tracker.stats().dropped.values())
        assert dropped == 0, f"{dropped} records dropped"
    finally:
        tracker.close()
    return runs / elapsed, count


WRITERS = (("thread", True), ("process", True), ("process", False))
"""The writers measured, with the metrics sink or without (the hub then sends run rows)."""


def _label(writer: str, metrics: bool) -> str:
    return f"{writer} writer{'' if metrics else ', no metrics'}"


def report(name: str, rate: float, count: int, runs: int) -> None:
    verdict = "PASS" if rate >= 20_000 and count == runs else "FAIL"
    print(
        f"{name:38s}: {rate:10,.0f} durable runs/s  rows present {count:,}/{runs:,}"
        f"  bar 20,000/s {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--postgres", default=DEFAULT_PG)
    args = parser.parse_args()

    for writer, metrics in WRITERS:
        with tempfile.TemporaryDirectory() as tmp:
            rate, count = run(f"sqlite:///{tmp}/ingest.sqlite3", args.runs, writer, metrics)
            report(f"sqlite, {_label(writer, metrics)}", rate, count, args.runs)

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.postgres)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        print(f"postgresql : skipped ({type(exc).__name__}: {exc})")
        return
    try:
        sep = "&" if "?" in args.postgres else "?"
        for writer, metrics in WRITERS:
            url = f"{args.postgres}{sep}options=-csearch_path%3D{schema}"
            rate, count = run(url, args.runs, writer, metrics)
            report(f"postgresql, {_label(writer, metrics)}", rate, count, args.runs)
            with admin.begin() as conn:
                conn.execute(text(f'TRUNCATE "{schema}".job_executions'))
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
