"""Helpers for tests: event-driven waits, and module-level jobs (importable by reference)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tracker import Execution, Status, current_run, tracked_job
from tracker._ids import new_run_id

T = TypeVar("T")


def finished(job_id: str, at: datetime, **fields: Any) -> Execution:
    """A record of a run of ``job_id`` due, started and ended at ``at``, succeeded in no time
    (``fields`` give any other value)."""
    values: dict[str, Any] = {
        "run_id": new_run_id(),
        "job_id": job_id,
        "job_name": job_id,
        "status": Status.SUCCEEDED,
        "scheduled_at": at,
        "started_at": at,
        "finished_at": at,
        "duration_s": 0.0,
        **fields,
    }
    return Execution(**values)


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


def plain_slow_job(seconds: float = 0.5) -> None:
    """An undecorated job that takes ``seconds``."""
    time.sleep(seconds)


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


class PostgresProxy:
    """A TCP proxy to PostgreSQL (127.0.0.1:5432) that passes everything on ``delay`` seconds
    late each way (a database some milliseconds away), and can go silent, like a dropped
    network or a frozen server: connections are accepted and nothing is ever answered."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.mode = "pass"
        self._stopped = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopped:
                    client.close()
                    return
                self._sockets.append(client)
                if self.mode != "pass":
                    continue  # accepted, never answered
                upstream = socket.create_connection(("127.0.0.1", 5432))
                self._sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                if self.mode == "pass":
                    dst.sendall(data)  # else swallowed
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _close(self, sockets: list[socket.socket]) -> None:
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def go_silent(self, *, reset: bool) -> None:
        """From now on nothing is answered; ``reset``: the connections open now are closed
        (new ones then hang in connect), else they hang too (their queries never answered)."""
        with self._lock:
            self.mode = "silent"
            if reset:
                self._close(self._sockets)
                self._sockets = []

    def restore(self) -> None:
        """Answer again (connections accepted while silent stay silent)."""
        self.mode = "pass"

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._listener.close()
            self._close(self._sockets)
            self._sockets = []
