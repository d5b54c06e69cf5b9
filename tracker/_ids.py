"""Identities: time-ordered run ids and the id of this tracker instance."""

from __future__ import annotations

import itertools
import os
import random
import socket
import time

from ._exceptions import ConfigurationError

INSTANCE_LENGTH = 255
"""Most characters an instance id may have: it is stored in ``VARCHAR(255)`` columns."""
_HOST_KEPT = 200
_counter = itertools.count()
_random = random.Random()  # not for secrets: uniqueness comes from time + counter + 62 random bits


_getrandbits = _random.getrandbits
_prefix: tuple[int, str] = (-1, "")  # (millisecond, its "xxxxxxxx-xxxx-7"), swapped atomically


def new_run_id(ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) string: unique, and sorting by time (millisecond precision).

    ``ms`` is the Unix time in milliseconds the id sorts by (default: now). A 12-bit
    per-process counter in ``rand_a`` keeps ids made in one millisecond apart; 62 random
    bits make collisions across processes negligible. About 0.7 µs, no lock: the text of
    the last millisecond used is made once and shared.
    """
    if ms is None:
        ms = time.time_ns() // 1_000_000
    return _uuid7(ms, next(_counter) & 0xFFF, _getrandbits(62))


def _uuid7(ms: int, rand_a: int, rand_b: int) -> str:
    """The UUIDv7 text of ``ms``, 12 bits ``rand_a`` and 62 bits ``rand_b``."""
    global _prefix
    cached = _prefix
    if cached[0] != ms:
        h = f"{ms & 0xFFFFFFFFFFFF:012x}"
        cached = _prefix = (ms, f"{h[:8]}-{h[8:]}-7")
    tail = "%016x" % (0x8000000000000000 | rand_b)  # variant 0b10, then the 62 bits
    return f"{cached[1]}{_HEX3[rand_a]}-{tail[:4]}-{tail[4:]}"


_HEX3 = tuple(f"{n:03x}" for n in range(4096))


def new_salt() -> int:
    """30 random bits that set apart the ids :func:`derived_run_id` makes for one writer."""
    return random.SystemRandom().getrandbits(30)


def derived_run_id(ms: int, salt: int, batch: int, index: int) -> str:
    """A UUIDv7 (RFC 9562) made from where a record was in what a writer was sent: the same
    every time it is made again (a batch sent again to a new writer process gets the ids the
    last one may have written), and apart from every other (the batch's number and the
    record's place in it; ``salt``, random per writer, keeps writers apart). 74 bits after the
    time and version: the salt (30), the batch (31), the place (13: batches hold at most 8,192).
    """
    low = (salt & 0x3FFFFFFF) << 44 | (batch & 0x7FFFFFFF) << 13 | (index & 0x1FFF)
    return _uuid7(ms, low >> 62, low & 0x3FFFFFFFFFFFFFFF)


def hostname() -> str:
    """This machine's name, as instances record it."""
    return socket.gethostname()


def new_instance_id() -> str:
    """``host:pid/xxxxxx``: which process (and which tracker in it) recorded a run (the host
    name cut to 200 characters, so that the id fits its column)."""
    host = hostname()[:_HOST_KEPT]
    return f"{host}:{os.getpid()}/{random.SystemRandom().getrandbits(24):06x}"


def checked_instance(instance: str) -> str:
    """``instance`` as plain text if a database can store it as given, else
    :class:`ConfigurationError`.

    Every row a tracker writes carries its instance id, and a tracker that starts again
    closes the rows of dead instances by it: an id the database would refuse, or store cut
    short, would lose or orphan every record.
    """
    if not isinstance(instance, str):
        raise ConfigurationError(f"instance must be text, not {type(instance).__name__}")
    if len(instance) > INSTANCE_LENGTH:
        raise ConfigurationError(
            f"instance must be at most {INSTANCE_LENGTH} characters (it is stored in "
            f"VARCHAR({INSTANCE_LENGTH}) columns); this one has {len(instance)}: "
            f"{instance[:40]!r}..."
        )
    if "\x00" in instance or not _encodable(instance):
        raise ConfigurationError(
            f"instance {instance!r} holds a NUL character or a lone surrogate, "
            "which databases cannot store"
        )
    # Plain text (an enum.StrEnum member is a str too): every record carries it, and the
    # writer process cannot unpickle the service's own classes.
    return str.__str__(instance)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
