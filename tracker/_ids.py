"""Identities: time-ordered run ids and the id of this tracker instance."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_seq = 0
_rand = random.SystemRandom()


def new_run_id() -> str:
    """A UUIDv7 (RFC 9562) string: unique, and sorting in the order runs were created.

    Within one millisecond a 12-bit counter keeps ids of this process increasing.
    """
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:
                ms += 1
                _seq = 0
        else:
            _seq = _rand.getrandbits(8)
        _last_ms = ms
        seq = _seq
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62
    value |= _rand.getrandbits(62)
    return str(uuid.UUID(int=value))


def run_id_floor(ms: int) -> str:
    """The smallest run id created at or after ``ms`` milliseconds since the epoch."""
    return str(uuid.UUID(int=(ms & 0xFFFFFFFFFFFF) << 80))


def hostname() -> str:
    """This machine's name, as instances record it."""
    return socket.gethostname()


def new_instance_id() -> str:
    """``host:pid/xxxxxx``: which process (and which tracker in it) recorded a run."""
    return f"{hostname()}:{os.getpid()}/{_rand.getrandbits(24):06x}"
