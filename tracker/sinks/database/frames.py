"""Messages between the tracker and its database writer process: length-prefixed pickles.

Both ends are this package, started from the same interpreter, so pickle is safe here
(nothing else writes to these pipes) and is the fastest way to move Python tuples.
"""

from __future__ import annotations

import os
import pickle
import select
import time
from typing import Any

_HEADER = 4
_MAX_FRAME = 1 << 30


class FrameTimeout(TimeoutError):
    """The other end did not take or give a whole message in time."""


def encode(message: object) -> bytes:
    """``message`` as one frame: its pickle, preceded by its length (4 bytes, big-endian)."""
    body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(_HEADER, "big") + body


def write_all(fd: int, data: bytes | memoryview, deadline: float | None = None) -> None:
    """Write all of ``data`` to ``fd`` (blocking or not) before ``deadline`` (monotonic).

    Raises :class:`FrameTimeout` when the reader does not keep up in time, ``OSError``
    (``BrokenPipeError``) when it is gone.
    """
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            written = 0
        view = view[written:]
        if view:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise FrameTimeout("the writer process is not reading")
            select.select([], [fd], [], remaining)


def read_exact(fd: int, size: int, deadline: float | None = None) -> bytes | None:
    """``size`` bytes from ``fd``; ``None`` at end of file before the first byte."""
    chunks: list[bytes] = []
    missing = size
    while missing:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise FrameTimeout("no whole message in time")
        chunk = os.read(fd, missing)
        if not chunk:
            if missing == size:
                return None
            raise EOFError("the pipe closed in the middle of a message")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None) -> Any:
    """The next message from ``fd``; raises ``EOFError`` when the other end closed it."""
    header = read_exact(fd, _HEADER, deadline)
    if header is None:
        raise EOFError("the other end closed the pipe")
    size = int.from_bytes(header, "big")
    if size > _MAX_FRAME:
        raise ValueError(f"message of {size} bytes: the pipe is out of step")
    body = read_exact(fd, size, None)
    if body is None:
        raise EOFError("the pipe closed in the middle of a message")
    return pickle.loads(body)
