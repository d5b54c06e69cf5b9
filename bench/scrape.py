"""/metrics with 1,000 jobs: prometheus-client's default rendering vs the metrics sink's.

Every job has all its series: runs_total for each terminal status, the duration and
lateness histograms (default buckets, 5 ms … 4 h), and the six gauges; values are
non-zero (each job has run). Figures (median of several scrapes, one process):

* ``prometheus-client``: the same series as prometheus-client ``Counter``/``Histogram``/
  ``Gauge`` objects (what a straightforward sink keeps) rendered by ``generate_latest``;
* ``generate_latest(collector)``: the sink's own families through prometheus-client's
  renderer (the path any other reader of the registry takes);
* ``render()``: the sink's fast path — first scrape (every job formatted, templates built),
  a scrape after every job ran, after 10 % of the jobs ran, and with nothing changed.

    python bench/scrape.py [--jobs 1000] [--repeat 7]

Bar (issue 3): <= 50 ms to render /metrics with 1,000 jobs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tracker import Execution, JobState, Status
from tracker.sinks.metrics import DEFAULT_DURATION_BUCKETS, DEFAULT_LATENESS_BUCKETS, MetricsSink
from tracker.sinks.metrics.families import GAUGES, RUN_STATUSES

_ids = count()


def run_events(job: int, status: Status, duration: float) -> list[Execution]:
    now = datetime.now(UTC)
    running = Execution(
        run_id=f"r{next(_ids)}", job_id=f"id-{job}", job_name=f"job_{job:04d}",
        status=Status.RUNNING, scheduled_at=now, started_at=now, lateness_s=0.02 * (job % 50),
    )  # fmt: skip
    finished = running.evolve(
        status=status, finished_at=now + timedelta(seconds=duration), duration_s=duration
    )
    return [running, finished]


def populate(sink: MetricsSink, jobs: int) -> None:
    now = datetime.now(UTC)
    events: list[object] = []
    for job in range(jobs):
        events.append(
            JobState(job_id=f"id-{job}", job_name=f"job_{job:04d}",
                     next_run_at=now + timedelta(minutes=job % 60))
        )  # fmt: skip
        events += run_events(job, Status.SUCCEEDED, 0.1 * (job % 300))
        events += run_events(job, Status.FAILED, 2.0)
        events.append(
            Execution(run_id=f"m{job}", job_id=f"id-{job}", job_name=f"job_{job:04d}",
                      status=Status.MISSED, scheduled_at=now, coalesced=3)
        )  # fmt: skip
    sink.handle(events)  # type: ignore[arg-type]


def reference(jobs: int) -> CollectorRegistry:
    """The same series held by prometheus-client's own metric objects."""
    registry = CollectorRegistry()
    runs = Counter("jobtracker_runs_total", "runs", ["job", "status"], registry=registry)
    duration = Histogram(
        "jobtracker_run_duration_seconds", "d", ["job"],
        buckets=DEFAULT_DURATION_BUCKETS, registry=registry,
    )  # fmt: skip
    lateness = Histogram(
        "jobtracker_run_lateness_seconds", "l", ["job"],
        buckets=DEFAULT_LATENESS_BUCKETS, registry=registry,
    )  # fmt: skip
    gauges = [Gauge(f.name, f.help, ["job"], registry=registry) for f in GAUGES]
    for job in range(jobs):
        name = f"job_{job:04d}"
        for status in RUN_STATUSES:
            runs.labels(name, status.value).inc(1 if status in ("succeeded", "failed") else 0)
        duration.labels(name).observe(0.1 * (job % 300))
        lateness.labels(name).observe(0.02 * (job % 50))
        for gauge in gauges:
            gauge.labels(name).set(time.time())
    return registry


def timed(
    fn: Callable[[], object], repeat: int, before: Callable[[], object] | None = None
) -> float:
    """Median milliseconds of ``fn`` (``before`` runs untimed ahead of each call)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def families(text: bytes) -> dict[str, object]:
    return {
        f.name: (f.type, sorted((s.name, sorted(s.labels.items()), s.value) for s in f.samples))
        for f in text_string_to_metric_families(text.decode())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    jobs, repeat = args.jobs, args.repeat

    ref = reference(jobs)
    ref_ms = timed(lambda: generate_latest(ref), repeat)
    ref_lines = generate_latest(ref).count(b"\n")

    cold = []
    for _ in range(repeat):
        sink = MetricsSink(CollectorRegistry(), removed_linger=0)
        populate(sink, jobs)
        started = time.perf_counter()
        sink.render()
        cold.append((time.perf_counter() - started) * 1000)
        sink.close(1)
    cold_ms = statistics.median(cold)

    sink = MetricsSink(CollectorRegistry(), removed_linger=0)
    populate(sink, jobs)
    body = sink.render()
    collector_ms = timed(lambda: generate_latest(sink.registry), repeat)
    same = families(body) == families(generate_latest(sink.registry))

    def every_job_ran() -> None:
        sink.handle([e for job in range(jobs) for e in run_events(job, Status.SUCCEEDED, 1.0)])

    def tenth_ran() -> None:
        sink.handle([e for job in range(0, jobs, 10) for e in run_events(job, Status.FAILED, 1.0)])

    all_ms = timed(sink.render, repeat, every_job_ran)
    tenth_ms = timed(sink.render, repeat, tenth_ran)
    warm_ms = timed(sink.render, repeat)
    body = sink.render()

    print(f"/metrics with {jobs} jobs, median of {repeat} scrapes")
    print(f"  prometheus-client objects + generate_latest : {ref_ms:8.1f} ms  ({ref_lines} lines)")
    print(f"  sink collector via generate_latest          : {collector_ms:8.1f} ms")
    lines, size = body.count(b"\n"), len(body) / 1e6
    print(f"  render(), first scrape (all jobs formatted) : {cold_ms:8.1f} ms  "
          f"({lines} lines, {size:.1f} MB)")  # fmt: skip
    print(f"  render(), every job ran since last scrape   : {all_ms:8.1f} ms")
    print(f"  render(), 10% of jobs ran since last scrape : {tenth_ms:8.1f} ms")
    print(f"  render(), nothing changed                   : {warm_ms:8.1f} ms")
    worst = max(cold_ms, all_ms)
    print(f"  speed-up, default vs render() worst case    : {ref_ms / worst:8.1f} x")
    print(f"  speed-up, default vs render() 10% changed   : {ref_ms / tenth_ms:8.1f} x")
    print(f"  render() parses to the same families as generate_latest: {same}")
    print(f"  bar <= 50 ms (worst case): {'met' if worst <= 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
