"""Text as SQL databases can store it, whatever a job's id, name or error holds."""

from __future__ import annotations

import hashlib
import re

NUL = "\x00"
REPLACEMENT = "\ufffd"
ID_LENGTH = 255
"""Length of the columns that hold a job's id or name, in every table (``VARCHAR(255)``)."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(text: str, limit: int | None = None) -> str:
    """``text`` with each NUL character (which PostgreSQL's text types cannot hold) and each
    lone surrogate (which is not UTF-8: ``os.fsdecode`` makes them of undecodable file names,
    and exception messages carry them) as U+FFFD, and, past ``limit`` characters, cut to
    ``limit``: its head, ``~`` and 16 hex digits of its SHA-256, so that two long texts with the
    same head stay apart (job ids key alert state)."""
    if NUL in text:
        text = text.replace(NUL, REPLACEMENT)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATE.sub(REPLACEMENT, text)
    if limit is not None and len(text) > limit:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        text = f"{text[: limit - 17]}~{digest}"
    return text
