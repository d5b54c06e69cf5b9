"""Helpers for tests: event-driven waits, and module-level jobs (importable by reference)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tracker import current_run, tracked_job

T = TypeVar("T")

RUNS: list[str] = []
"""Run ids seen by jobs below, in the order they ran (this process only)."""
_lock = threading.Lock()


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def _seen() -> None:
    run = current_run()
    with _lock:
        RUNS.append(run.run_id if run else "")


@tracked_job
def ok_job() -> str:
    _seen()
    return "ok"


@tracked_job(tags={"team": "billing"}, max_runtime=30)
def failing_job() -> None:
    _seen()
    raise ValueError("invoice 42 could not be synced")


@tracked_job
async def async_ok_job() -> str:
    _seen()
    await asyncio.sleep(0)
    return "ok"


@tracked_job
async def async_failing_job() -> None:
    _seen()
    await asyncio.sleep(0)
    raise RuntimeError("async failure")


@tracked_job
def slow_job(seconds: float = 0.5) -> None:
    _seen()
    time.sleep(seconds)


def plain_job() -> None:
    """An undecorated job: tracked from scheduler events only."""
    with _lock:
        RUNS.append("plain")


def plain_failing_job() -> None:
    raise KeyError("missing")


@tracked_job
def record_run_to_file(path: str) -> None:
    """Writes the current run id (empty when not tracked in-run) to ``path``."""
    run = current_run()
    Path(path).write_text(run.run_id if run else "", encoding="utf-8")


@tracked_job
def wait_job(event: threading.Event) -> None:
    """Runs until ``event`` is set (at most 30 s)."""
    event.wait(30)


@tracked_job
def hang_job(marker: str) -> None:
    """Touches ``marker`` then sleeps a long time (to be killed mid-run)."""
    Path(marker).write_text(str(os.getpid()), encoding="utf-8")
    time.sleep(120)
