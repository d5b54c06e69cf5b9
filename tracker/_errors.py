"""Turning a job's exception into bounded text for the record."""

from __future__ import annotations

import traceback as _tb

MAX_MESSAGE = 2_000
MAX_TRACEBACK = 16_000


def error_type(exc: BaseException) -> str:
    """``module.QualName`` of the exception's class (builtins without a module)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, keeping its head and tail around a marker."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head - 40
    return f"{text[:head]}\n… [{len(text) - head - tail} characters cut] …\n{text[-tail:]}"


UNPRINTABLE = "<exception str() failed>"
"""The message of an exception whose ``__str__`` raised (the text the ``traceback`` module uses)."""


def describe(exc: BaseException, traceback: str | None = None) -> tuple[str, str, str]:
    """(error_type, error_message, traceback), each bounded in size. Never raises: an
    exception whose ``__str__`` raises keeps its type and traceback, with
    :data:`UNPRINTABLE` as its message.

    ``traceback``: the text to use when the exception carries none (APScheduler's events
    give the frames as text, and the exception without them once it crossed a process).
    """
    try:
        message = str(exc)
    except Exception:
        message = UNPRINTABLE
    try:
        formatted = "".join(_tb.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:
        formatted = f"{error_type(exc)}: {message}\n"
    if exc.__traceback__ is None and traceback:
        formatted = f"Traceback (most recent call last):\n{traceback}{formatted}"
    return error_type(exc), bounded(message, MAX_MESSAGE), bounded(formatted, MAX_TRACEBACK)
