"""History queries at scale: the run history's read paths on a PostgreSQL table of 10 million rows.

Loads ``--rows`` runs (default 10,000,000: 1,000 jobs, one run a job every ~13 minutes over 90
days, 2 % failed, a few missed and timed out) into a fresh schema made by the tracker's own
migrations, server-side (``generate_series``), then ``ANALYZE``. Each query goes through the
code the tracker and the HTTP API use (``select_executions``: SQL, then records); the figure is
the median of 30 calls after 3 warm-up calls, with the plan PostgreSQL chose. The SQL panels of
the Grafana dashboards (``grafana/dashboards``) are timed too, as Grafana sends them for one job
over the last day and week. The schema is
dropped afterwards (``--keep`` keeps it for a later ``--reuse``).

    python bench/history.py [--rows 10000000] [--postgres URL] [--keep | --reuse SCHEMA]

Bar (DESIGN.md): the last runs of one job, and the failures of the last 24 hours, each in
<= 20 ms at 10 million rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from tracker.sinks.database import upgrade
from tracker.sinks.database.queries import select_executions

DEFAULT_PG = os.environ.get(
    "TRACKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BAR_MS = 20.0
_SCAN = re.compile(
    r"(Parallel )?(Index Only Scan|Index Scan|Bitmap Heap Scan|Bitmap Index Scan|Seq Scan)"
    r"( Backward)?( using \S+)?"
)
JOBS = 1_000
DASHBOARDS = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"
DAYS = 90

LOAD = f"""
INSERT INTO job_executions (run_id, job_id, job_name, status, scheduled_at, started_at,
    finished_at, duration_s, lateness_s, error_type, error_message, traceback, instance, origin,
    coalesced)
SELECT
    lpad(to_hex(i), 36, '0'),
    'job-' || (i % {JOBS}),
    'sync_job_' || (i % {JOBS}),
    CASE WHEN i % 50 = 7 THEN 'failed' WHEN i % 997 = 3 THEN 'missed'
         WHEN i % 1999 = 5 THEN 'timed_out' ELSE 'succeeded' END,
    at,
    at + interval '15 milliseconds',
    at + interval '15 milliseconds' + (i % 400) * interval '1 millisecond',
    0.015 + (i % 400) / 1000.0,
    0.015,
    CASE WHEN i % 50 = 7 THEN 'httpx.ConnectError' END,
    CASE WHEN i % 50 = 7 THEN 'upstream ledger service refused the connection' END,
    CASE WHEN i % 50 = 7 THEN repeat('Traceback (most recent call last): ...', 20) END,
    'web-' || (i % 4) || '.internal.4242/a1b2c3',
    'scheduled',
    0
FROM (
    SELECT i, :now - (:rows - i) * (interval '{DAYS} days' / :rows) AS at
    FROM generate_series(1, :rows) AS i
) AS s
"""


def load(engine: Engine, rows: int) -> float:
    started = time.perf_counter()
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(LOAD), {"rows": rows, "now": datetime.now(UTC)})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE job_executions"))
    return time.perf_counter() - started


def plan(engine: Engine, call: Callable[[], Any]) -> str:
    """The scan PostgreSQL chose for the query ``call`` runs (from ``EXPLAIN``)."""
    captured: list[tuple[str, Any]] = []

    from sqlalchemy import event

    def before(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        captured.append((statement, params))

    event.listen(engine, "before_cursor_execute", before)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    statement, params = captured[-1]
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute("EXPLAIN " + statement, params)
            lines = [row[0] for row in cursor.fetchall()]
    scans = [found.group(0) for line in lines if (found := _SCAN.search(line))]
    return "; ".join(dict.fromkeys(scans)) or lines[0].split("  (")[0]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, SQL) of every PostgreSQL panel of the Grafana dashboards in ``grafana/``."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        stack = list(json.loads(path.read_text())["panels"])
        while stack:
            panel = stack.pop(0)
            stack.extend(panel.get("panels", []))
            found += [
                (panel["title"], t["rawSql"]) for t in panel.get("targets", []) if "rawSql" in t
            ]
    return found


def grafana_query(engine: Engine, sql: str, now: datetime, hours: int) -> Callable[[], Any]:
    """The query as Grafana sends it for job ``sync_job_7`` over the last ``hours``."""
    start = (now - timedelta(hours=hours)).isoformat()
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{start}' AND '{now.isoformat()}'", sql
    ).replace("$job", "sync_job_7")

    def call() -> list[Any]:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql(sql))

    return call


def timed(call: Callable[[], Any]) -> tuple[float, int]:
    """Median milliseconds of 30 calls (after 3 warm-ups), and how many records one returned."""
    for _ in range(3):
        found = call()
    samples = []
    for _ in range(30):
        started = time.perf_counter()
        found = call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--postgres", default=DEFAULT_PG)
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    parser.add_argument("--reuse", metavar="SCHEMA", help="query a schema kept by --keep")
    args = parser.parse_args()

    schema = args.reuse or f"bench_history_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.postgres)
    if not args.reuse:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in args.postgres else "?"
    engine = create_engine(f"{args.postgres}{sep}options=-csearch_path%3D{schema}")
    try:
        if not args.reuse:
            seconds = load(engine, args.rows)
            print(f"loaded {args.rows:,} rows in {seconds:.0f} s (schema {schema})")
        else:  # brought to this version's schema (its indexes) first
            upgrade(engine)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE job_executions"))
        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM job_executions")).scalar_one()
            size = conn.execute(
                text("SELECT pg_size_pretty(pg_total_relation_size('job_executions'))")
            ).scalar_one()
        print(f"job_executions: {count:,} rows, {size} with its indexes")
        now = datetime.now(UTC)
        newest = select_executions(engine, limit=1)[0]
        queries: list[tuple[str, bool, Callable[[], Any]]] = [
            (
                "last 50 runs of one job",
                True,
                lambda: select_executions(engine, job_id="job-7", limit=50),
            ),
            (
                "failures in the last 24 h (100 newest)",
                True,
                lambda: select_executions(
                    engine, status="failed", since=now - timedelta(hours=24), limit=100
                ),
            ),
            (
                "last 100 runs, all jobs",
                False,
                lambda: select_executions(engine, limit=100),
            ),
            (
                "one job's failures (50 newest)",
                False,
                lambda: select_executions(engine, job_id="job-7", status="failed", limit=50),
            ),
            (
                "failed or timed out, any time (50 newest)",
                False,
                lambda: select_executions(engine, status=["failed", "timed_out"], limit=50),
            ),
            (
                "one job, page after 1,000 runs (cursor)",
                False,
                lambda: select_executions(
                    engine,
                    job_id="job-7",
                    limit=50,
                    before=(newest.scheduled_at - timedelta(days=9), "z"),
                ),
            ),
        ]
        for hours in (24, 24 * 7):
            for title, sql in dashboard_queries():
                queries.append(
                    (f"{title[:30]} ({hours} h)", False, grafana_query(engine, sql, now, hours))
                )
        print(f"median of 30 calls; bar {BAR_MS:.0f} ms for the first two")
        for name, barred, call in queries:
            ms, found = timed(call)
            verdict = ("PASS" if ms <= BAR_MS else "FAIL") if barred else ""
            print(f"  {name:42s} {ms:7.2f} ms  {found:4d} rows  {verdict:4s}  {plan(engine, call)}")
    finally:
        engine.dispose()
        if not args.keep:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
