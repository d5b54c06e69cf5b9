"""A small sink that prints each run to the console as it is recorded."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from .._record import Execution, Origin, Status
from .._sink import BaseSink, TrackerEvent

_COLORS = {
    Status.SUCCEEDED: "32",
    Status.FAILED: "31",
    Status.TIMED_OUT: "35",
    Status.MISSED: "33",
    Status.SKIPPED: "36",
    Status.INTERRUPTED: "90",
}


class ConsoleSink(BaseSink):
    """Prints one line per finished run (``running`` states are not printed)."""

    name = "console"

    def __init__(self, stream: TextIO | None = None, *, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.color = isatty() if color is None else color
        self.counts: dict[Status, int] = {}
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        """Finished runs printed so far."""
        return sum(self.counts.values())

    def handle(self, events: Sequence[TrackerEvent]) -> None:
        lines = [self.format(e) for e in events if isinstance(e, Execution) and e.is_finished]
        if not lines:
            return
        for event in events:
            if isinstance(event, Execution) and event.is_finished:
                with self._lock:
                    self.counts[event.status] = self.counts.get(event.status, 0) + 1
        self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()

    def format(self, e: Execution) -> str:
        """``13:38:29  failed       sync_inventory      0.105s  ConnectionError: ...``."""
        when = e.scheduled_at.astimezone().strftime("%H:%M:%S")
        status = f"{e.status.value:<11}"
        if self.color:
            status = f"\033[{_COLORS.get(e.status, '0')}m{status}\033[0m"
        took = f"{e.duration_s:7.3f}s" if e.duration_s is not None else " " * 8
        parts = [when, status, f"{e.job_name:<22}", took]
        if e.origin is Origin.MANUAL:
            parts.append("(manual)")
        if e.coalesced:
            parts.append(f"({e.coalesced} fire times coalesced)")
        if e.error_type:
            parts.append(f"{e.error_type}: {e.error_message}" if e.error_message else e.error_type)
        elif e.status in (Status.MISSED, Status.SKIPPED, Status.INTERRUPTED) and e.error_message:
            parts.append(e.error_message)
        parts.append(f"run {e.run_id}")
        return "  ".join(parts)
