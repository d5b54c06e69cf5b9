"""Records that could not be written before shutdown, kept in a local file until the next start.

When the database is still down at a clean shutdown, the pending records are written
to ``<spill_dir>/<database>-<writer>-<instance>.jsonl`` (one record a line); the next tracker
on the same database (any instance, on this machine) loads them and writes them
before deleting the file. Each writer has a file of its own (``<writer>``: its process and a
random tag, :func:`spill_tag`): a service under a fixed instance id that starts and stops again
while the database is still down must not replace the file its last run left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Collection, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ..._record import Execution
from .processes import running_since
from .rows import from_row, to_row

logger = logging.getLogger("tracker.database")

_TIMES = ("scheduled_at", "started_at", "finished_at")
_NAME_KEPT = 96


def default_spill_dir() -> Path:
    """``$XDG_STATE_HOME/tracker/spill`` (``~/.local/state/tracker/spill``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "tracker" / "spill"


def _prefix(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _file_part(instance: str) -> str:
    """``instance`` as part of a file name: ASCII letters and digits (others as ``_``), and a
    long one cut to 96 characters, the last 16 the hex digits of its SHA-256 (an instance id
    may have 255 characters, non-ASCII ones too; file systems allow names of 255 bytes)."""
    safe = "".join(c if c.isascii() and c.isalnum() else "_" for c in instance)
    if len(safe) > _NAME_KEPT:
        digest = hashlib.sha256(instance.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        safe = f"{safe[: _NAME_KEPT - 17]}_{digest}"
    return safe


def spill_tag() -> str:
    """What sets one writer's spill file apart from every other's: its process id and 32
    random bits. A writer keeps its tag, so that each spill it makes replaces its own file."""
    return f"{os.getpid()}.{secrets.token_hex(4)}"


def spill(
    directory: Path, url: str, instance: str, records: Iterable[Execution], tag: str = ""
) -> Path:
    """Write ``records`` to the spill file for ``url`` of the writer ``tag``
    (:func:`spill_tag`), replacing that file whole; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = spill_path(directory, url, instance, tag)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        _write_lines(f, records)
    tmp.replace(path)
    return path


def append(
    directory: Path, url: str, instance: str, records: Iterable[Execution], tag: str
) -> Path:
    """Add ``records`` at the end of the spill file of the writer ``tag`` (made if need be), and
    make them durable (``fsync``); returns its path. (Loading keeps a run's finished state over
    its ``running`` one, in whichever order they were added.)"""
    directory.mkdir(parents=True, exist_ok=True)
    path = spill_path(directory, url, instance, tag)
    with path.open("a", encoding="utf-8") as f:
        _write_lines(f, records)
    return path


def spill_path(directory: Path, url: str, instance: str, tag: str = "") -> Path:
    """The spill file of the writer ``tag`` of ``instance`` for ``url``."""
    name = f"{tag}-{_file_part(instance)}" if tag else _file_part(instance)
    return directory / f"{_prefix(url)}-{name}.jsonl"


def _write_lines(f: TextIO, records: Iterable[Execution]) -> None:
    for record in records:
        row = to_row(record)
        for key in _TIMES:
            if row[key] is not None:
                row[key] = row[key].isoformat()
        f.write(json.dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())


def load(
    directory: Path, url: str, mine: Collection[int] = ()
) -> tuple[list[Execution], list[Path]]:
    """Records spilled for ``url`` by earlier trackers, and the files they came from: not those
    of a writer that still runs in another process (it writes them itself), unless that process
    is among ``mine`` (a writer process loads what its service spilled)."""
    if not directory.is_dir():
        return [], []
    records: list[Execution] = []
    loaded: list[Path] = []
    for path in sorted(directory.glob(f"{_prefix(url)}-*.jsonl")):
        if _writer_alive(path, mine):
            continue  # its writer, in an outage, adds to it still: it writes them itself
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            logger.error("tracker could not read spill file %s: %s", path, exc)
            continue
        good: list[str] = []
        found: list[Execution] = []
        for line in lines:
            try:
                found.append(_record(line))
            except Exception:  # (a line nested too deep for json raises RecursionError)
                continue
            good.append(line)
        if len(good) < len(lines) and not _set_aside(path, good, len(lines)):
            continue
        records.extend(found)
        loaded.append(path)
    return records, loaded


_TEXTS = ("run_id", "job_id", "job_name", "instance")


_TAGGED = re.compile(r"[0-9a-f]{16}-(\d+)\.[0-9a-f]{8}-")


def _writer_alive(path: Path, mine: Collection[int]) -> bool:
    """Whether the file's writer (another process of this host) still runs: a writer adds to its
    file during an outage, and deletes it once what it holds is written. Taken as gone when its
    process id now belongs to a process that started after the file last changed."""
    tagged = _TAGGED.match(path.name)
    if tagged is None:
        return False
    pid = int(tagged.group(1))
    if pid == os.getpid() or pid in mine:
        return False
    try:
        changed = path.stat().st_mtime
    except OSError:
        return False
    # (/proc's boot time is in whole seconds; a start that cannot be read: taken as alive)
    return running_since(pid, changed + 1.0) is not False


def _record(line: str) -> Execution:
    row: dict[str, Any] = json.loads(line)
    for key in _TIMES:
        if row[key] is not None:
            row[key] = datetime.fromisoformat(row[key])
    for key in _TEXTS:  # (a run id that is a list would stop every merge of the records)
        if type(row[key]) is not str:
            raise TypeError(f"{key} is not text: {row[key]!r}")
    return from_row(row)


def _set_aside(path: Path, good: list[str], lines: int) -> bool:
    """A spill file with lines that can't be read: kept beside, renamed ``.corrupt``, for a
    person to look at, and replaced by its readable lines, loaded (and deleted once written)
    like any spill file. ``False`` if that could not be done (the file is then left as it
    is, and loaded at the next start)."""
    kept = path.with_name(f"{path.name}.corrupt")
    clean = path.with_suffix(".tmp")
    try:
        clean.write_text("".join(f"{line}\n" for line in good), encoding="utf-8")
        path.replace(kept)
        clean.replace(path)
    except OSError as exc:
        logger.error("tracker could not set aside the damaged spill file %s: %s", path, exc)
        return False
    logger.error(
        "tracker could not read %d of the %d lines of spill file %s: the file is kept as %s; "
        "its other records are written",
        lines - len(good),
        lines,
        path,
        kept,
    )
    return True
