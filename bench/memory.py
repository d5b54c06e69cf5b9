"""Memory is flat: RSS growth over 1,000,000 tracked runs (direct calls, SQLite, default sinks).

RSS is read after a warm-up of 100,000 runs (caches, pools and buffers at their working
size) and again after 1,000,000 more; the tracker flushes every 20,000 runs so the
buffer bound is not what keeps memory flat.

    python bench/memory.py [--runs 1000000]

Bar (issue 2): <= 5 MB of growth.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

from tracker import Tracker, tracked_job


@tracked_job
def trivial(i: int) -> int:
    return i


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(f"sqlite:///{tmp}/memory.sqlite3")
        for i in range(args.warmup):
            trivial(i)
            if i % 20_000 == 19_999:
                assert tracker.flush(120)
        assert tracker.flush(120)
        gc.collect()
        before = rss_mb()
        started = time.perf_counter()
        for i in range(args.runs):
            trivial(i)
            if i % 20_000 == 19_999:
                assert tracker.flush(120)
        assert tracker.flush(120)
        gc.collect()
        after = rss_mb()
        elapsed = time.perf_counter() - started
        dropped = sum(tracker.stats().dropped.values())
        tracker.close()
    growth = after - before
    print(
        f"{args.runs:,} tracked runs in {elapsed:.0f} s; RSS {before:.1f} MB -> {after:.1f} MB: "
        f"growth {growth:+.2f} MB (bar 5 MB: {'PASS' if growth <= 5 else 'FAIL'}); "
        f"dropped {dropped}"
    )


if __name__ == "__main__":
    main()
