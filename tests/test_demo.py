"""`tracker demo` as a real service: uvicorn in a subprocess, scraped by a real Prometheus."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import support
from apscheduler.schedulers.background import BackgroundScheduler
from conftest import need
from sqlalchemy import create_engine, func, select

from tracker import is_tracked
from tracker.demo import jobs
from tracker.demo.app import register_jobs
from tracker.sinks.database.schema import executions

TRACKER = str(Path(sys.executable).with_name("tracker"))
TOKEN = "demo-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
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


@dataclass
class Demo:
    process: subprocess.Popen[str]
    database_url: str
    lines: list[str] = field(default_factory=list)
    base: str = ""

    def output(self) -> str:
        return "\n".join(self.lines)


def _pump(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


@contextmanager
def running_demo(tmp_path: Path, *extra: str) -> Iterator[Demo]:
    """`tracker demo --fast` on a free loopback port; killed on the way out whatever happens."""
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    process = subprocess.Popen(
        [TRACKER, "demo", "--fast", "--port", "0", "--token", TOKEN, "--database-url", url, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    demo = Demo(process, url)
    reader = threading.Thread(target=_pump, args=(process.stdout, demo.lines), daemon=True)
    reader.start()
    try:

        def base_url() -> str | None:
            if process.poll() is not None:
                raise AssertionError(f"demo exited early:\n{demo.output()}")
            for line in demo.lines:
                found = re.search(r"metrics\s+(http://\S+)/metrics", line)
                if found:
                    return found.group(1)
            return None

        demo.base = support.wait_for(base_url, timeout=20)
        yield demo
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def statuses_seen(demo: Demo) -> set[str]:
    seen = set()
    for status in ("succeeded", "failed", "skipped", "missed", "timed_out"):
        page = httpx.get(f"{demo.base}/executions?status={status}&limit=1", headers=AUTH)
        if page.json()["items"]:
            seen.add(status)
    return seen


@pytest.mark.slow
def test_demo_serves_every_kind_of_run_and_stops_cleanly(tmp_path: Path) -> None:
    """The demo serves the API, produces every kind of run, and Ctrl-C flushes everything."""
    with running_demo(tmp_path) as demo:
        assert "token       demo-token" in demo.output()
        assert httpx.get(f"{demo.base}/health").json()["status"] == "ok"
        listed = httpx.get(f"{demo.base}/jobs", headers=AUTH).json()["items"]
        assert {j["id"] for j in listed} == DEMO_JOBS
        assert httpx.get(f"{demo.base}/jobs").status_code == 401
        expected = {"succeeded", "failed", "skipped", "missed", "timed_out"}
        support.wait_for(lambda: statuses_seen(demo) == expected, timeout=20, interval=0.25)
        coalesced = httpx.get(
            f"{demo.base}/executions?job=charge_invoices&status=missed", headers=AUTH
        ).json()["items"]
        assert coalesced[-1]["coalesced"] == 3
        assert "docs" in httpx.get(f"{demo.base}/").json()
        demo.process.send_signal(signal.SIGINT)
        assert demo.process.wait(timeout=20) == 0, demo.output()
    printed = re.search(r"(\d+) run\(s\) recorded this time, everything flushed", demo.output())
    assert printed, demo.output()
    assert "Traceback" not in demo.output()
    engine = create_engine(demo.database_url)
    with engine.connect() as conn:
        finished = conn.execute(
            select(func.count()).select_from(executions).where(executions.c.status != "running")
        ).scalar_one()
        running = conn.execute(
            select(func.count()).select_from(executions).where(executions.c.status == "running")
        ).scalar_one()
    engine.dispose()
    assert (finished, running) == (int(printed.group(1)), 0)


def test_demo_jobs_are_tracked_and_picklable_by_reference() -> None:
    """Every sample job is a decorated module-level function that pickles by reference."""
    scheduler = BackgroundScheduler(timezone="UTC")
    register_jobs(scheduler, scale=1.0)
    found = scheduler.get_jobs()
    assert {j.id for j in found} == DEMO_JOBS
    for job in found:
        assert job.func_ref.startswith("tracker.demo.jobs:")
        assert is_tracked(job.func)
        assert pickle.loads(pickle.dumps(job.func)) is getattr(jobs, job.func.__name__)


def test_demo_reports_a_busy_port_and_a_bad_database_in_one_line(tmp_path: Path) -> None:
    """A port in use or an unusable database URL: one line on stderr, exit status 1."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                TRACKER,
                "demo",
                "--port",
                str(port),
                "--database-url",
                f"sqlite:///{tmp_path / 'x.sqlite3'}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"tracker: error: cannot listen on 127.0.0.1:{port}: Address already in use "
        f"(try --port {port + 1})"
    )
    bad = subprocess.run(
        [TRACKER, "demo", "--database-url", "postgresql://u@127.0.0.1:9/x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("tracker: error: cannot connect to postgresql+psycopg://")
    assert bad.stderr.count("\n") == 1


# -- with a real Prometheus -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """A Prometheus server scraping ``target`` every second; killed on the way out.

    ``honor_labels: true`` as in prometheus/prometheus.yml: the metrics' own ``job`` label
    (the tracked job's name) must not be renamed to ``exported_job``.
    """
    binary = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if binary is None:
        need("prometheus not installed (Debian package prometheus)")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: tracker-demo\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['{target}']\n",
        encoding="utf-8",
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError((tmp_path / "prometheus.log").read_text())
            try:
                return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        support.wait_for(ready, timeout=20, interval=0.1)
        yield base
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.slow
def test_prometheus_scrapes_the_demo(tmp_path: Path) -> None:
    """A real Prometheus scrapes the demo twice; jobtracker_runs_total carries its jobs and runs."""
    with running_demo(tmp_path) as demo:
        target = demo.base.removeprefix("http://")
        with running_prometheus(tmp_path, target) as prometheus:

            def scraped_twice() -> bool:
                samples = query(prometheus, 'count_over_time(up{job="tracker-demo"}[1m])')
                up = query(prometheus, 'up{job="tracker-demo"}')
                return bool(
                    samples
                    and float(samples[0]["value"][1]) >= 2
                    and up
                    and up[0]["value"][1] == "1"
                )

            support.wait_for(scraped_twice, timeout=20, interval=0.25)
            series = query(prometheus, "jobtracker_runs_total")
            assert {s["metric"]["job"] for s in series} == DEMO_JOBS
            assert {s["metric"]["instance"] for s in series} == {target}
            ran = query(prometheus, 'sum by (status) (jobtracker_runs_total{status="succeeded"})')
            assert float(ran[0]["value"][1]) > 0


def test_demo_exports_spans_as_the_otel_variables_say(tmp_path: Path, monkeypatch) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the demo's runs arrive as spans at that receiver."""
    from test_tracing import _OtlpHandler, _Receiver

    server = _Receiver(("127.0.0.1", 0), _OtlpHandler)
    server.requests, server.paths = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    try:
        with running_demo(tmp_path):

            def span_names() -> set[str]:
                return {
                    span.name
                    for request in list(server.requests)
                    for rs in request.resource_spans
                    for ss in rs.scope_spans
                    for span in ss.spans
                }

            support.wait_for(lambda: span_names() & DEMO_JOBS, timeout=20)
        services = {
            a.value.string_value
            for request in server.requests
            for rs in request.resource_spans
            for a in rs.resource.attributes
            if a.key == "service.name"
        }
        assert services == {"tracker-demo"}
    finally:
        server.shutdown()
        server.server_close()
