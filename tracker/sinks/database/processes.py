"""The processes of this host: whether one runs, and when it started (``/proc``)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (any process: ids are reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            for line in stat:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def process_started(pid: int) -> float | None:
    """When process ``pid`` of this host started (Unix time), where ``/proc`` tells."""
    boot = _boot_time()
    if boot is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def running_since(pid: int, moment: float) -> bool | None:
    """Whether process ``pid`` of this host runs and is the one that ran at ``moment`` (Unix
    time): ``False`` when none runs under that id, or the one that does started after (the id
    was reused); ``None`` when it runs and when it started is not known."""
    if not pid_alive(pid):
        return False
    started = process_started(pid)
    return None if started is None else started <= moment
