"""Messages between the tracker and its database writer process: length-prefixed pickles.

Both ends are this package, started from the same interpreter, so pickle is safe here
(nothing else writes to these pipes) and is the fastest way to move Python tuples.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

_HEADER = 4
_MAX_FRAME = 1 << 30


def encode(message: object) -> bytes:
    """``message`` as one frame: its pickle, preceded by its length (4 bytes, big-endian)."""
    body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(_HEADER, "big") + body


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the (blocking) ``fd``; ``BrokenPipeError`` when the reader
    is gone."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``; ``None`` at end of file before the first byte."""
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = os.read(fd, missing)
        if not chunk:
            if missing == size:
                return None
            raise EOFError("the pipe closed in the middle of a message")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Any:
    """The next message from ``fd``; raises ``EOFError`` when the other end closed it."""
    header = _read_exact(fd, _HEADER)
    if header is None:
        raise EOFError("the other end closed the pipe")
    size = int.from_bytes(header, "big")
    if size > _MAX_FRAME:
        raise ValueError(f"message of {size} bytes: the pipe is out of step")
    body = _read_exact(fd, size)
    if body is None:
        raise EOFError("the pipe closed in the middle of a message")
    return pickle.loads(body)
