"""Tracking overhead: the same trivial jobs dispatched by APScheduler with and without tracking.

N one-shot jobs, all due at once, are added to a paused BackgroundScheduler
(MemoryJobStore, ThreadPoolExecutor); the clock runs from ``resume()`` until the
last job has run. Variants run alternately, several rounds, in one process; the
figure is each variant's median throughput as a share of untracked APScheduler's. In
brackets, the lowest and highest share measured within one round: on a busy 2-core machine
single rounds vary widely, and the range shows how far. Each round starts after a full
garbage collection, so garbage left by the previous round's set-up is not collected inside
the next round's clock (the collections the runs themselves cause are measured).

    python bench/overhead.py [--jobs 5000] [--rounds 5] [--pin CPU]

Bars: database + hub (``metrics=False``) >= 80 % of untracked throughput (issue 2); every signal
on (database, metrics, spans, JSON logs to a file) >= 40 % (issue 4). The defaults (database +
metrics) are shown too, and both bars' variants again with the writer process
(``database_writer="process"``). Beside them, the floor (``bench/floor.py``): the least an
in-run tracker can do, with no database — the job and fire time found from ``run_job``'s frame,
the run timed and queued, a record made of it on another thread — so that each run shows how
much of the throughput any tracking of this kind keeps here. Then the CPU this process spent per
run (``time.process_time``, all its threads; not the writer process's), a steadier figure than
throughput where other work shares the machine, and the same split by thread (APScheduler's, its
pool's, the hub's, each sink's). Keep ``--jobs`` at 5000 when comparing: with more jobs,
APScheduler's own ``MemoryJobStore`` slows (its removals are O(n)) and every ratio looks better.
Last, the garbage collections that ran while the jobs did: a full (generation 2) collection
costs tens of milliseconds in this process. ``--pin 1`` runs everything (a writer process too)
on one core: throughput then says little (the GIL is handed over within one core, the writer
process competes with the service), but the CPU per run varies far less from run to run than on
two cores.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from tracker import Execution, Origin, Status, Tracker, TrackerSettings, tracked_job
from tracker._ids import new_run_id

_done = threading.Event()
_count = 0
_target = 0
_lock = threading.Lock()
_cpu: list[float] = []  # CPU seconds of this process (all its threads) during each dispatch
_gcs: list[tuple[int, ...]] = []  # garbage collections (per generation) during each dispatch
_threads: list[dict[str, float]] = []  # CPU seconds per kind of thread during each dispatch


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """Each live thread's name and CPU seconds so far (Unix: ``pthread_getcpuclockid``)."""
    seen: dict[int, tuple[str, float]] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            seen[thread.ident] = (thread.name, time.clock_gettime(clock))
        except (AttributeError, OSError):  # not on this platform, or the thread just ended
            continue
    return seen


def _by_kind(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds since ``before`` per kind of thread (its name without a trailing number:
    the ten ``ThreadPoolExecutor-0_N`` are one kind)."""
    kinds: dict[str, float] = {}
    for ident, (name, seconds) in _thread_cpu().items():
        kind = re.sub(r"[-_\d]+$", "", name)
        kinds[kind] = kinds.get(kind, 0.0) + seconds - before.get(ident, (name, 0.0))[1]
    return kinds


def _collections() -> tuple[int, ...]:
    return tuple(generation["collections"] for generation in gc.get_stats())


def _tick() -> None:
    global _count
    with _lock:
        _count += 1
        if _count >= _target:
            _done.set()


def plain_job() -> None:
    _tick()


@tracked_job
def tracked() -> None:
    _tick()


def dispatch(n: int, func: Callable[[], None], setup: Callable[[Any], Any] | None) -> float:
    """Seconds for APScheduler to run ``n`` due one-shot jobs of ``func``."""
    global _count, _target
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(10)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        timezone="UTC",
    )
    teardown = setup(scheduler) if setup else None
    scheduler.start(paused=True)
    now = datetime.now(UTC)
    for i in range(n):
        scheduler.add_job(func, "date", run_date=now, id=f"job-{i}")
    _count, _target = 0, n
    _done.clear()
    gc.collect()  # each round starts with the same, empty, garbage collector state
    collections = _collections()
    threads = _thread_cpu()
    started = time.perf_counter()
    cpu = time.process_time()
    scheduler.resume()
    if not _done.wait(600):
        raise RuntimeError("jobs did not finish")
    elapsed = time.perf_counter() - started
    _cpu.append(time.process_time() - cpu)
    _threads.append(_by_kind(threads))
    _gcs.append(tuple(b - a for a, b in zip(collections, _collections(), strict=True)))
    # The last run can end before the scheduler's thread has removed the last one-shot jobs
    # from the store; shutting down under it makes APScheduler raise JobLookupError there.
    deadline = time.monotonic() + 30
    while scheduler.get_jobs() and time.monotonic() < deadline:
        time.sleep(0.01)
    scheduler.shutdown(wait=True)
    if teardown:
        teardown()
    return elapsed


def with_tracker(writer: str = "thread", **options: Any) -> Callable[[Any], Callable[[], None]]:
    def setup(scheduler: Any) -> Callable[[], None]:
        tmp = tempfile.mkdtemp()
        tracker = Tracker(
            f"sqlite:///{tmp}/overhead.sqlite3",
            settings=TrackerSettings(database_writer=writer),
            **options,
        )
        tracker.instrument(scheduler)

        def teardown() -> None:
            assert tracker.flush(60)
            rows = len(tracker.executions(limit=1_000_000))
            tracker.close()
            if rows < _target:
                raise RuntimeError(f"only {rows} of {_target} runs recorded")

        return teardown

    return setup


def with_every_signal(writer: str = "thread") -> Callable[[Any], Callable[[], None]]:
    """Database, metrics, an OpenTelemetry span per run (SDK provider, batch processor, an
    exporter that discards) and JSON logs (lifecycle events) to a file."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from tracker import configure_logging

    class Discard(SpanExporter):
        exported = 0

        def export(self, spans: Any) -> SpanExportResult:
            Discard.exported += len(spans)
            return SpanExportResult.SUCCESS

    def setup(scheduler: Any) -> Callable[[], None]:
        import logging

        import structlog

        log_file = f"{tempfile.mkdtemp()}/tracker.jsonl"
        configure_logging("json", file=log_file)
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        Discard.exported = 0
        inner = with_tracker(writer, tracing=True, tracer_provider=provider, logs=True)(scheduler)

        def teardown() -> None:
            inner()
            provider.shutdown()
            with open(log_file, encoding="utf-8") as lines:
                logged = sum('"job_succeeded"' in line for line in lines)
            root = logging.getLogger()
            for handler in [h for h in root.handlers if getattr(h, "_tracker_handler", False)]:
                root.removeHandler(handler)
                handler.close()
            structlog.reset_defaults()
            if logged < _target or Discard.exported < _target:
                raise RuntimeError(f"{logged} runs logged, {Discard.exported} spans exported")

        return teardown

    return setup


# -- the floor: the least an in-run tracker can do -------------------------------------

_RUN_JOB = run_job.__code__
_floor_current: ContextVar[list[Any] | None] = ContextVar("floor_current_run", default=None)
_floor_ended: deque[list[Any]] = deque()


def least(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` tracked with the least work: find the job and fire time, time the run, queue it."""

    @functools.wraps(fn)
    def wrapper() -> None:
        frame = sys._getframe(1)
        while frame.f_code is not _RUN_JOB:
            back = frame.f_back
            if back is None:
                return fn()
            frame = back
        local = frame.f_locals
        run = [local["job"].id, local["run_time"], time.time(), time.perf_counter(), 0.0]
        token = _floor_current.set(run)
        try:
            return fn()
        finally:
            run[4] = time.perf_counter() - run[3]
            _floor_current.reset(token)
            _floor_ended.append(run)

    return wrapper


def _floor_records() -> int:
    """The hub's side of the floor: each ended run becomes a record (then is dropped)."""
    made = 0
    while _floor_ended:
        job_id, fire_time, wall, _, duration = _floor_ended.popleft()
        started = datetime.fromtimestamp(wall, UTC)
        scheduled = fire_time.astimezone(UTC)
        Execution._make(
            (
                new_run_id(int(wall * 1000)),
                job_id,
                job_id,
                Status.SUCCEEDED,
                scheduled,
                started,
                started,
                duration,
                (started - scheduled).total_seconds(),
                None,
                None,
                None,
                "floor",
                Origin.SCHEDULED,
                0,
                None,
                None,
                {},
            )
        )
        made += 1
    return made


def with_floor(scheduler: Any) -> Callable[[], None]:
    """The floor's other thread (a record made of each ended run, every 50 ms), for one round."""
    stop = threading.Event()
    made = [0]

    def loop() -> None:
        while not stop.wait(0.05):
            made[0] += _floor_records()

    thread = threading.Thread(target=loop, name="floor-records", daemon=True)
    thread.start()

    def teardown() -> None:
        stop.set()
        thread.join()
        made[0] += _floor_records()
        if made[0] < _target:
            raise RuntimeError(f"the floor made {made[0]} of {_target} records")

    return teardown


VARIANTS: dict[str, tuple[Callable[[], None], Callable[[Any], Any] | None]] = {
    "untracked APScheduler": (plain_job, None),
    "floor: least in-run tracking, no db": (least(plain_job), with_floor),
    "tracked: database + hub": (tracked, with_tracker(metrics=False)),
    "tracked: database + metrics (defaults)": (tracked, with_tracker()),
    "every signal (db, metrics, spans, logs)": (tracked, with_every_signal()),
    "database + hub, writer process": (tracked, with_tracker("process", metrics=False)),
    "every signal, writer process": (tracked, with_every_signal("process")),
}


def arguments(doc: str) -> argparse.Namespace:
    """``--jobs``, ``--rounds`` and ``--pin`` (applied: this process moves to that core)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pin", type=int, default=None, metavar="CPU", help="run on this core")
    args = parser.parse_args()
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    return args


def main() -> None:
    args = arguments(__doc__)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    gcs: dict[str, list[tuple[int, ...]]] = {name: [] for name in VARIANTS}
    kinds: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    dispatch(500, plain_job, None)  # warm-up
    for _ in range(args.rounds):
        for name, (func, setup) in VARIANTS.items():
            times[name].append(dispatch(args.jobs, func, setup))
            cpu[name].append(_cpu.pop())
            gcs[name].append(_gcs.pop())
            kinds[name].append(_threads.pop())
    untracked = times["untracked APScheduler"]
    base = args.jobs / statistics.median(untracked)
    print(f"{args.jobs} one-shot jobs x {args.rounds} rounds (median; range of the rounds' ratios)")
    for name, samples in times.items():
        rate = args.jobs / statistics.median(samples)
        paired = [u / s for u, s in zip(untracked, samples, strict=True)]  # same round
        spread = f"{min(paired):.1%} to {max(paired):.1%}"
        print(f"  {name:38s} {rate:9,.0f} runs/s  {rate / base:6.1%} of untracked  ({spread})")
    print("CPU of this process per run (all its threads; a writer process's own is not counted)")
    untracked_cpu = statistics.median(cpu["untracked APScheduler"]) / args.jobs * 1e6
    for name, samples in cpu.items():
        per_run = statistics.median(samples) / args.jobs * 1e6
        print(f"  {name:38s} {per_run:6.1f} µs  (+{per_run - untracked_cpu:5.1f} µs)")
    print("The same CPU per run, by thread (median; threads under 0.5 µs left out)")
    for name, rounds in kinds.items():
        names = {kind for one in rounds for kind in one}
        medians = {k: statistics.median(r.get(k, 0.0) for r in rounds) for k in names}
        shown = sorted(
            ((k, v / args.jobs * 1e6) for k, v in medians.items()), key=lambda kv: -kv[1]
        )
        print(f"  {name}: " + ", ".join(f"{k} {us:.1f}" for k, us in shown if us >= 0.5))
    print("Garbage collections while the jobs ran, per round (generations 0 / 1 / 2; the objects")
    print("a run leaves behind until its record is written make them more frequent and longer)")
    for name, rounds in gcs.items():
        per_round = [sum(r[g] for r in rounds) / len(rounds) for g in range(3)]
        print(f"  {name:38s} {per_round[0]:5.0f} / {per_round[1]:3.0f} / {per_round[2]:4.1f}")


if __name__ == "__main__":
    main()
