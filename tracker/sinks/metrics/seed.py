"""Seeding the metrics from the run history, so a restart does not reset what they say.

Without it, a restarted process would export ``jobtracker_consecutive_failures`` 0 and
no last success or failure for every job: ``JobFailingRepeatedly`` would resolve (and
Alertmanager say so) while the job is still failing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine

from ..database.queries import failure_streaks
from .sink import MetricsSink
from .state import Seed

logger = logging.getLogger("tracker")

MAX_JOBS = 2_000
"""Job ids read at most (those due most recently)."""
DEPTH = 100
"""Newest runs read per job id (consecutive failures are counted up to this)."""


def seed_from_history(
    sink: MetricsSink,
    engine: Engine,
    *,
    on_error: Callable[[str, BaseException], None] | None = None,
    max_jobs: int = MAX_JOBS,
    depth: int = DEPTH,
) -> threading.Thread:
    """Read each job's last success, last failure and failures since that success from the
    history on a thread of its own, and hand them to ``sink`` (:meth:`MetricsSink.seed`).

    Only runs that finished before now count: runs of this process are the events' to
    count. Never raises: an error is passed to ``on_error`` (the hub's error count, as
    sink ``metrics``) or logged, and the metrics simply start from zero.
    """
    before = datetime.now(UTC)

    def run() -> None:
        try:
            streaks = failure_streaks(engine, before=before, max_jobs=max_jobs, depth=depth)
        except Exception as exc:
            if on_error is not None:
                on_error(sink.name, exc)
            else:
                logger.warning("tracker could not seed the metrics from the history: %s", exc)
            return
        sink.seed(
            {
                name: Seed(
                    _epoch(streak.last_success),
                    _epoch(streak.last_failure),
                    streak.consecutive_failures,
                )
                for name, streak in streaks.items()
            }
        )

    thread = threading.Thread(target=run, name="tracker-metrics-seed", daemon=True)
    try:
        thread.start()
    except RuntimeError as exc:  # no thread to be had: start without the history
        if on_error is not None:
            on_error(sink.name, exc)
        else:
            logger.warning("tracker could not seed the metrics from the history: %s", exc)
    return thread


def _epoch(value: datetime | None) -> float:
    return 0.0 if value is None else float(value.timestamp())
