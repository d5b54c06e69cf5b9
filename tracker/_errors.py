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


def describe(exc: BaseException) -> tuple[str, str, str]:
    """(error_type, error_message, traceback), each bounded in size."""
    message = bounded(str(exc), MAX_MESSAGE)
    formatted = "".join(_tb.format_exception(type(exc), exc, exc.__traceback__))
    return error_type(exc), message, bounded(formatted, MAX_TRACEBACK)
