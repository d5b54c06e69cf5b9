"""Sample jobs for ``tracker demo``: module-level and decorated, so they pickle by reference.

Together they produce a record of every kind: ``succeeded``, ``failed`` (now and then),
``skipped`` (max_instances reached), ``missed`` (fire times that waited too long for a
busy executor, and fire times coalesced after downtime), ``timed_out`` (past
``max_runtime``) and ``interrupted`` (in progress when the demo stops).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading

from .._decorator import tracked_job

STOP = threading.Event()
"""Set when the demo stops, so blocking sample jobs return at once (their runs are already
recorded as interrupted by then)."""

_inventory_calls = itertools.count(1)


@tracked_job(tags={"team": "web"})
async def say_hello() -> None:
    """Always succeeds, quickly."""
    await asyncio.sleep(random.uniform(0.005, 0.05))


@tracked_job(tags={"team": "stock"})
def sync_inventory() -> int:
    """Fails every third call: the upstream service is flaky."""
    call = next(_inventory_calls)
    STOP.wait(random.uniform(0.01, 0.1))
    if call % 3 == 0:
        raise ConnectionError("inventory service answered 503 Service Unavailable")
    return call


@tracked_job(tags={"team": "finance"})
async def build_report(seconds: float) -> None:
    """Takes longer than its interval: later fire times are skipped (max_instances=1)."""
    await asyncio.sleep(seconds)


@tracked_job(tags={"team": "search"})
def rebuild_search_index(seconds: float) -> None:
    """Holds the one-thread ``serial`` executor for a while."""
    STOP.wait(seconds)


@tracked_job(tags={"team": "web"})
def send_digest() -> None:
    """Shares the ``serial`` executor: while the index rebuilds, its fire times go missed."""
    STOP.wait(0.01)


@tracked_job(max_runtime=1.0, tags={"team": "finance"})
async def export_ledger(seconds: float) -> None:
    """Runs past its max_runtime of 1 s: recorded as timed_out."""
    await asyncio.sleep(seconds)


@tracked_job(tags={"team": "billing"})
async def charge_invoices() -> None:
    """Starts with a backlog of fire times from 'downtime': they are coalesced into one run."""
    await asyncio.sleep(0.02)


@tracked_job(tags={"team": "ops"})
def nightly_cleanup() -> None:
    """A daily cron job: never runs during a demo, but its series and next run are there."""
