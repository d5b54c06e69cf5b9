"""The operator's view against real data: the demo, a real Prometheus, real PostgreSQL.

The demo (``tracker demo --fast``) runs on a fresh PostgreSQL schema; a real Prometheus
scrapes it every second with the shipped prometheus/prometheus.yml (only the target
address rewritten and Alertmanager left out) and evaluates the shipped rules. Once the
demo has produced runs of every kind, every PromQL expression of every dashboard panel and
every rule goes through Prometheus's HTTP query API, and the SQL of the run-history panels
runs against the job_executions table the demo wrote.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import POSTGRES_URL, need, postgres_problem
from grafana_queries import (
    Query,
    expand_sql_macros,
    load_dashboards,
    queries,
    substitute,
    variables_used,
)
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
SCRAPE_INTERVAL_S = 1
RATE_INTERVAL = "4s"
"""Grafana's $__rate_interval for a 1 s scrape interval: max($__interval + scrape, 4 x scrape)."""
EVERY_KIND = {"succeeded", "failed", "skipped", "missed", "timed_out"}
"""Statuses the demo produces while it runs (``interrupted`` only when it stops)."""
DEMO_JOBS = {
    "say_hello",
    "sync_inventory",
    "build_report",
    "rebuild_search_index",
    "send_digest",
    "export_ledger",
    "charge_invoices",
    "nightly_cleanup",
}

MAY_BE_EMPTY: dict[tuple[str, str], str] = {}
"""(dashboard, panel title) -> why that panel may legitimately show no data.

Empty on purpose: every panel is written to return a value (``or on() vector(0)`` for
counts of things that are normally absent, series that exist at 0 from the start), so
a panel without data is a bug. Panels that depend on ``$job`` must return data for at
least one job; those showing a single job (e.g. "Since last success") legitimately show
their "no value" text for a job that never ran, like the demo's nightly cron job.
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    log: Path | None = None,
    describe: Callable[[], str] | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            state = describe() if describe else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{state}\n{tail}")
        time.sleep(0.25)


@dataclass
class Stack:
    prometheus: httpx.Client
    database_url: str
    started: datetime
    demo_log: Path
    jobs: list[str] = field(default_factory=list)

    def query(self, expr: str, *, instant: bool, start: float, end: float) -> dict[str, Any]:
        """Prometheus's answer to ``expr`` (``status``, ``data`` or ``error``)."""
        if instant:
            response = self.prometheus.post("/api/v1/query", data={"query": expr, "time": end})
        else:
            response = self.prometheus.post(
                "/api/v1/query_range",
                data={"query": expr, "start": start, "end": end, "step": SCRAPE_INTERVAL_S},
            )
        body: dict[str, Any] = response.json()
        return body

    def vector(self, expr: str) -> list[dict[str, Any]]:
        body = self.query(expr, instant=True, start=0, end=time.time())
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def _prometheus_config(source: Path, target: str) -> dict[str, Any]:
    """The shipped config with the app's address as target, 1 s intervals, no Alertmanager."""
    config: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    config["global"]["scrape_interval"] = f"{SCRAPE_INTERVAL_S}s"
    config["global"]["evaluation_interval"] = f"{SCRAPE_INTERVAL_S}s"
    config.pop("alerting", None)
    [scrape] = [s for s in config["scrape_configs"] if s["job_name"] == "tracker"]
    scrape["static_configs"] = [{"targets": [target]}]
    return config


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The demo on a fresh PostgreSQL schema, scraped by a real Prometheus (shipped rules)."""
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        need("prometheus not installed (Debian package prometheus)")
    problem = postgres_problem()
    if problem:
        need(problem)
    assert prometheus_bin is not None
    tmp = tmp_path_factory.mktemp("stack")

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    database_url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"

    processes: list[subprocess.Popen[bytes]] = []
    demo_log = tmp / "demo.log"
    prometheus_log = tmp / "prometheus.log"
    try:
        with demo_log.open("wb") as out:
            demo = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tracker.cli",
                    "demo",
                    "--fast",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--database-url",
                    database_url,
                    "--token",
                    "e2e-token",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        processes.append(demo)

        def metrics_url() -> str | None:
            assert demo.poll() is None, demo_log.read_text(errors="replace")
            match = re.search(r"metrics\s+http://127\.0\.0\.1:(\d+)/metrics", demo_log.read_text())
            return match.group(1) if match else None

        app_port = _wait("the demo to listen", metrics_url, 30, demo_log)

        config = _prometheus_config(ROOT / "prometheus" / "prometheus.yml", f"127.0.0.1:{app_port}")
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        (tmp / "rules").symlink_to(ROOT / "prometheus" / "rules")  # rule_files: rules/*.yml
        port = _free_port()
        with prometheus_log.open("wb") as out:
            prometheus = subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        processes.append(prometheus)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def ready() -> bool:
            assert prometheus.poll() is None, prometheus_log.read_text(errors="replace")
            try:
                return client.get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        _wait("Prometheus to be ready", ready, 30, prometheus_log)
        result = Stack(client, database_url, datetime.now(UTC), demo_log)

        def every_kind() -> bool:
            body = result.query(
                "count by (status) (jobtracker_runs_total > 0)",
                instant=True,
                start=0,
                end=time.time(),
            )
            seen = {s["metric"]["status"] for s in body.get("data", {}).get("result", [])}
            return seen >= EVERY_KIND

        _wait(f"runs of every kind ({sorted(EVERY_KIND)}) in Prometheus", every_kind, 45, demo_log)
        # a few more scrapes, so that every rate window holds several samples of them
        time.sleep(3 * SCRAPE_INTERVAL_S)
        yield result
        client.close()
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in reversed(processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def job_values(stack: Stack) -> list[str]:
    """The values Grafana offers for $job: label_values(jobtracker_runs_total, job)."""
    response = stack.prometheus.get(
        "/api/v1/label/job/values", params={"match[]": "jobtracker_runs_total"}
    )
    values: list[str] = response.json()["data"]
    return values


def test_job_variable_lists_the_demo_jobs_by_name(job_values: list[str]) -> None:
    """$job offers the demo's job names: their `job` label survives the scrape (honor_labels)."""
    assert set(job_values) == DEMO_JOBS


def _has_data(body: dict[str, Any]) -> bool:
    """Whether a query answer holds at least one finite value."""
    data = body["data"]
    for series in data["result"]:
        values = series.get("values") or [series["value"]]
        if any(math.isfinite(float(value)) for _, value in values):
            return True
    return False


def _prometheus_variables(start: datetime, end: datetime, job: str | None) -> dict[str, str]:
    seconds = max(1, int((end - start).total_seconds()))
    values = {
        "__rate_interval": RATE_INTERVAL,
        "__interval": f"{SCRAPE_INTERVAL_S}s",
        "__interval_ms": str(SCRAPE_INTERVAL_S * 1000),
        "__range": f"{seconds}s",
        "__range_s": str(seconds),
        "__range_ms": str(seconds * 1000),
    }
    if job is not None:
        values["job"] = job
    return values


def test_every_prometheus_panel_query_evaluates_and_returns_data(
    stack: Stack, job_values: list[str]
) -> None:
    """Each PromQL query of each panel runs without error and shows data (for some $job)."""
    end = datetime.now(UTC)
    start = stack.started
    problems: list[str] = []
    checked = 0
    for name, dashboard in load_dashboards().items():
        for query in queries(name, dashboard):
            if query.is_sql:
                continue
            jobs: list[str | None] = (
                list(job_values) if "job" in variables_used(query.text) else [None]
            )
            with_data = []
            for job in jobs:
                expr = substitute(query.text, _prometheus_variables(start, end, job))
                body = stack.query(
                    expr, instant=query.instant, start=start.timestamp(), end=end.timestamp()
                )
                checked += 1
                if body.get("status") != "success":
                    problems.append(f"{query.label} [job={job}]: {body.get('error')}\n  {expr}")
                    continue
                if _has_data(body):
                    with_data.append(job)
            if not with_data and (name, query.panel_title) not in MAY_BE_EMPTY:
                problems.append(f"{query.label}: no data for any of {jobs}\n  {query.text}")
    assert checked > 50
    assert not problems, "\n".join(problems)


def test_attention_table_lists_the_failing_job_and_not_the_healthy_one(stack: Stack) -> None:
    """The attention table, merged and filtered as its transformations say, lists export_ledger."""
    overview = load_dashboards()["tracker-overview.json"]
    [panel] = [p for p in overview["panels"] if p.get("title") == "Jobs that need attention"]
    rows: dict[str, dict[str, float]] = {}
    for target in panel["targets"]:
        for series in stack.vector(target["expr"]):  # instant, one row per job ("merge")
            rows.setdefault(series["metric"]["job"], {})[f"Value #{target['refId']}"] = float(
                series["value"][1]
            )
    assert set(rows) == DEMO_JOBS
    [filters] = [t for t in panel["transformations"] if t["id"] == "filterByValue"]
    compare = {"greater": float.__gt__, "equal": float.__eq__}

    def shown(row: dict[str, float]) -> bool:
        return any(
            f["fieldName"] in row
            and compare[f["config"]["id"]](
                row[f["fieldName"]], float(f["config"]["options"]["value"])
            )
            for f in filters["options"]["filters"]
        )

    listed = {job for job, row in rows.items() if shown(row)}
    # export_ledger times out on every run; say_hello always succeeds, on time
    assert "export_ledger" in listed
    assert "say_hello" not in listed
    assert rows["export_ledger"]["Value #A"] >= 1  # consecutive failures


def _rules(stack: Stack) -> list[dict[str, Any]]:
    groups = stack.prometheus.get("/api/v1/rules").json()["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_rule_is_loaded_and_evaluates_without_error(stack: Stack) -> None:
    """Prometheus loaded every shipped rule and evaluates each one without error."""
    shipped = []
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            shipped.extend(group["rules"])

    def evaluated() -> list[dict[str, Any]] | None:
        loaded = _rules(stack)
        done = all(not r["lastEvaluation"].startswith("0001") for r in loaded)
        return loaded if done else None

    loaded = _wait("every rule to be evaluated", evaluated, 15)
    assert sorted(r["name"] for r in loaded) == sorted(
        r.get("alert") or r["record"] for r in shipped
    )
    for rule in loaded:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    for rule in shipped:
        body = stack.query(rule["expr"], instant=True, start=0, end=time.time())
        assert body["status"] == "success", (rule.get("alert"), body.get("error"))


def test_the_demo_fires_the_alerts_its_jobs_deserve(stack: Stack) -> None:
    """Failed, timed-out, missed and skipped runs raise their alerts; health ones stay quiet."""
    expected = {
        ("JobRunFailed", "sync_inventory"),
        ("JobRunFailed", "export_ledger"),
        ("JobFailingRepeatedly", "export_ledger"),  # times out every time
        ("JobRunsMissed", "send_digest"),
        ("JobRunsSkipped", "build_report"),
        # not charge_invoices' missed runs: they are recorded at start-up, before the first
        # scrape, and increase() cannot see what a counter did before Prometheus saw it
    }

    def active() -> set[tuple[str, str]] | None:
        alerts = stack.prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
        found = {(a["labels"]["alertname"], a["labels"].get("job", "")) for a in alerts}
        return found if expected <= found else None

    def show() -> str:
        alerts = stack.prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
        return "active: " + ", ".join(
            sorted(
                f"{a['labels']['alertname']}{{job={a['labels'].get('job')}}} {a['state']}"
                for a in alerts
            )
        )

    found = _wait(f"alerts {sorted(expected)}", active, 20, describe=show)
    names = {name for name, _ in found}
    assert not names & {"TrackerDown", "TrackerAbsent", "TrackerRecordsDropped", "JobOverdue"}


def _sql_values(job: str) -> dict[str, str]:
    return {"job": job.replace("'", "''")}


def test_run_history_sql_panels_return_the_demo_runs(stack: Stack, job_values: list[str]) -> None:
    """Each SQL panel, its macros expanded as Grafana does, reads the demo's job_executions rows."""
    start = stack.started - timedelta(minutes=5)
    end = datetime.now(UTC) + timedelta(minutes=1)
    sql_queries: list[Query] = [
        q for name, d in load_dashboards().items() for q in queries(name, d) if q.is_sql
    ]
    assert sql_queries
    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            ran = {
                row[0]
                for row in conn.execute(
                    text("SELECT DISTINCT job_name FROM job_executions WHERE status <> 'running'")
                )
            }
            assert ran >= DEMO_JOBS - {"nightly_cleanup"}
            for query in sql_queries:
                rows_by_job = {}
                for job in job_values:
                    sql = expand_sql_macros(substitute(query.text, _sql_values(job)), start, end)
                    result = conn.execute(text(sql))
                    rows_by_job[job] = [dict(r._mapping) for r in result]
                with_rows = {job for job, rows in rows_by_job.items() if rows}
                assert with_rows, f"{query.label}: no rows for any job"
                if query.panel_title == "Run history":
                    assert with_rows == ran, query.label
                    failed = [r for r in rows_by_job["sync_inventory"] if r["Status"] == "failed"]
                    assert failed and all(
                        "503 Service Unavailable" in r["Error message"] for r in failed
                    )
                    scheduled = [r["Scheduled"] for r in rows_by_job["say_hello"]]
                    assert scheduled == sorted(scheduled, reverse=True)  # newest first
                elif query.panel_title == "Errors in this range":
                    errors = {r["Error"]: r for r in rows_by_job["sync_inventory"]}
                    assert errors["ConnectionError"]["Runs"] >= 1
                    assert "503" in errors["ConnectionError"]["Latest message"]
                    assert {r["Error"] for r in rows_by_job["build_report"]} >= {"skipped"}
                elif query.fmt == "time_series":
                    for rows in rows_by_job.values():
                        assert all(set(r) == {"time", "metric", "value"} for r in rows)
    finally:
        engine.dispose()
