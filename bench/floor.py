"""The floor of in-run tracking: how much of APScheduler's throughput the least a tracker can do
keeps, measured beside the real tracker, in one run.

The least: the same ``run_job`` frame lookup the tracker's wrapper makes (job and fire time),
two clocks, the current run set and restored in a ``ContextVar``, the ended run queued; on
another thread every 50 ms, each queued run turned into an :class:`~tracker.Execution` with
the fields the hub fills (run id, times, lateness), then dropped. No listener, no live-run
registry, no hooks, no database. Whatever the tracker keeps below this figure is what its
other work costs (``bench/overhead.py`` splits that by thread).

    python bench/floor.py [--jobs 5000] [--rounds 5] [--pin CPU]

Same method as ``bench/overhead.py`` (one-shot jobs due at once, a paused scheduler
resumed, variants alternating, medians of the rounds); it also prints the CPU this process
spent per run (a writer process's own not counted), steadier than throughput on a busy
machine, steadiest with ``--pin 1``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from overhead import _cpu, arguments, dispatch, least, plain_job, tracked, with_floor, with_tracker


def _tick() -> None:
    plain_job()


VARIANTS: dict[str, tuple[Callable[[], None], Callable[[Any], Any] | None]] = {
    "untracked APScheduler": (plain_job, None),
    "floor: least in-run tracking": (least(_tick), with_floor),
    "tracker: database + hub": (tracked, with_tracker(metrics=False)),
    "tracker: database + hub, writer process": (tracked, with_tracker("process", metrics=False)),
}


def main() -> None:
    args = arguments(__doc__)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    dispatch(500, plain_job, None)  # warm-up
    for _ in range(args.rounds):
        for name, (func, setup) in VARIANTS.items():
            times[name].append(dispatch(args.jobs, func, setup))
            cpu[name].append(_cpu.pop())
    untracked = times["untracked APScheduler"]
    base = args.jobs / statistics.median(untracked)
    print(f"{args.jobs} one-shot jobs x {args.rounds} rounds (median; range of the rounds' ratios)")
    for name, samples in times.items():
        rate = args.jobs / statistics.median(samples)
        paired = [u / s for u, s in zip(untracked, samples, strict=True)]
        per_run = statistics.median(cpu[name]) / args.jobs * 1e6
        print(
            f"  {name:40s} {rate:9,.0f} runs/s {rate / base:6.1%}"
            f"  ({min(paired):.0%} to {max(paired):.0%})  CPU {per_run:5.1f} µs/run"
        )


if __name__ == "__main__":
    main()
