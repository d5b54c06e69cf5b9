"""A scheduler process driven by tests (separate interpreter, like a service restart).

    python proc_scheduler.py add  TRACKER_URL JOBSTORE OUT   # store a job, don't run it
    python proc_scheduler.py run  TRACKER_URL JOBSTORE OUT   # restore it, run it now, exit
    python proc_scheduler.py hang TRACKER_URL MARKER [INSTANCE]  # a job that hangs (to be killed)

JOBSTORE is a SQLAlchemy URL or ``redis://host:port/db#key``.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import support
from apscheduler.schedulers.background import BackgroundScheduler

from tracker import Tracker, TrackerSettings


def jobstore(spec: str):
    if spec.startswith("redis://"):
        from apscheduler.jobstores.redis import RedisJobStore

        address, key = spec[len("redis://") :].split("#")
        host_port, db = address.split("/")
        host, port = host_port.split(":")
        return RedisJobStore(
            host=host,
            port=int(port),
            db=int(db),
            jobs_key=f"{key}.jobs",
            run_times_key=f"{key}.run_times",
        )
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    return SQLAlchemyJobStore(url=spec)


def main() -> None:
    mode, tracker_url = sys.argv[1], sys.argv[2]
    if mode == "hang":
        marker = sys.argv[3]
        instance = sys.argv[4] if len(sys.argv) > 4 else None  # a fixed instance id
        tracker = Tracker(
            tracker_url, settings=TrackerSettings(flush_interval=0.02), instance=instance
        )
        scheduler = BackgroundScheduler(timezone="UTC")
        tracker.instrument(scheduler)
        scheduler.add_job(
            support.hang_job, "date", run_date=datetime.now(UTC), args=[marker], id="hanging"
        )
        scheduler.start()
        time.sleep(120)
        return
    store, out = sys.argv[3], sys.argv[4]
    scheduler = BackgroundScheduler(jobstores={"default": jobstore(store)}, timezone="UTC")
    if mode == "add":
        scheduler.start(paused=True)
        scheduler.add_job(
            support.record_run_to_file,
            "interval",
            hours=1,
            args=[out],
            id="persisted",
            replace_existing=True,
            next_run_time=datetime.now(UTC) + timedelta(hours=1),
        )
        scheduler.shutdown()
        return
    tracker = Tracker(tracker_url, settings=TrackerSettings(flush_interval=0.02))
    tracker.instrument(scheduler)
    scheduler.start()
    scheduler.modify_job("persisted", next_run_time=datetime.now(UTC))
    deadline = time.monotonic() + 20
    while not Path(out).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    scheduler.shutdown(wait=True)
    tracker.close()


if __name__ == "__main__":
    main()
