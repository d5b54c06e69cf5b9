"""A real Prometheus server scraping render(): it ingests the text, and increase() sees the
first failure of a daily job because the failed counter was already scraped at 0."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from conftest import need
from prometheus_client import CollectorRegistry

from tracker import MetricsSink, Tracker, TrackerSettings, tracked_job
from tracker.sinks.metrics import CONTENT_TYPE

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
DOC_QUERIES = re.findall(r"```promql\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)


@tracked_job
def export() -> None:
    raise RuntimeError("export target unreachable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_metrics(sink: MetricsSink) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = sink.render()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Prometheus:
    def __init__(self, binary: str, target: str, tmp: Path) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: tracker\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = (tmp / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=5) as response:
            payload = json.load(response)
        assert payload["status"] == "success", payload
        return payload["data"]["result"]  # type: ignore[no-any-return]

    def scalar(self, promql: str) -> float | None:
        try:
            result = self.query(promql)
        except OSError:
            return None
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        need("prometheus not installed (Debian package prometheus)")
    return str(binary)


@pytest.fixture
def stack(sqlite_url: str, tmp_path: Path, prometheus_binary: str) -> Iterator[Any]:
    tracker = Tracker(
        sqlite_url, settings=TrackerSettings(flush_interval=0.02), registry=CollectorRegistry()
    )
    assert tracker.metrics is not None
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.start()
    server = serve_metrics(tracker.metrics)
    prometheus = Prometheus(prometheus_binary, f"127.0.0.1:{server.server_address[1]}", tmp_path)
    yield tracker, scheduler, prometheus
    prometheus.stop()
    server.shutdown()
    server.server_close()
    scheduler.shutdown(wait=True)
    tracker.close(5)


def test_prometheus_sees_a_daily_jobs_first_failure(stack: Any) -> None:
    """Scraped at 0 before its first run, the failure shows in increase() — with the job's
    name in the ``job`` label (honor_labels) and the tracker's health under the scrape job."""
    tracker, scheduler, prometheus = stack
    scheduler.add_job(export, "cron", hour=3, id="nightly", name="nightly_export")
    failed = 'jobtracker_runs_total{job="nightly_export",status="failed"}'
    wait_for(lambda: (prometheus.scalar(f"count_over_time({failed}[1m])") or 0) >= 2)
    assert prometheus.scalar(failed) == 0

    tracker.instrument(scheduler).run_now("nightly")
    wait_for(lambda: prometheus.scalar(failed) == 1)
    assert (prometheus.scalar(f"increase({failed}[1m])") or 0) > 0

    next_run = prometheus.scalar('jobtracker_next_run_timestamp_seconds{job="nightly_export"}')
    assert next_run == pytest.approx(scheduler.get_job("nightly").next_run_time.timestamp())
    assert prometheus.scalar('jobtracker_records_dropped_total{job="tracker"}') == 0
    p95 = prometheus.scalar(
        "histogram_quantile(0.95, sum by (le) "
        '(jobtracker_run_duration_seconds_bucket{job="nightly_export"}))'
    )
    assert p95 is not None
    assert p95 <= 0.005

    # every example query of docs/metrics.md is valid PromQL for a real Prometheus
    for promql in DOC_QUERIES:
        prometheus.query(promql)
    failure_ratio = prometheus.query(DOC_QUERIES[0].replace("[1h]", "[1m]"))
    assert [r["metric"]["job"] for r in failure_ratio] == ["nightly_export"]
    assert float(failure_ratio[0]["value"][1]) == 1.0
