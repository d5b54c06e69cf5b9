"""Settings read from the environment (``TRACKER_*``) or passed in code."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from ._exceptions import ConfigurationError

_PRIVATE = re.compile(r"token|password|secret|dsn|url|key", re.IGNORECASE)
"""Settings whose values an error message must not repeat."""


class Settings(BaseSettings):
    """Base of tracker's settings classes: a value that can't be used, given in code or in
    a ``TRACKER_*`` environment variable, is a :class:`~tracker.ConfigurationError` naming
    the setting and its variable (not pydantic's ``ValidationError``), so that
    ``except ConfigurationError`` catches every configuration mistake."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(_explain(type(self), exc)) from None
        except SettingsError as exc:  # a variable that should hold JSON does not
            raise ConfigurationError(_explain_source(type(self), exc)) from None


def _shown(field: str, value: object, size: int) -> str:
    """``; got <value>`` for an error message, unless the setting is private or ``size`` (the
    value's length) is past 80."""
    return f"; got {value!r}" if not _PRIVATE.search(field) and size <= 80 else ""


def _explain_source(cls: type[BaseSettings], exc: SettingsError) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    found = re.search(r'field "(\w+)"', str(exc))
    if found is None:
        return f"invalid {cls.__name__}: {exc}"
    field = found.group(1)
    variable = f"{prefix}{field.upper()}"
    value = os.environ.get(variable)
    shown = _shown(field, value, len(value)) if value is not None else ""
    why = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
    return f"invalid {cls.__name__}: {field} ({variable}): not valid JSON{why}{shown}"


def _explain(cls: type[BaseSettings], exc: ValidationError) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if not field:  # a rule between settings: its message names them
            problems.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        where = f"{field} ({prefix}{field.upper()})"
        value = error.get("input")
        shown = _shown(field, value, len(repr(value)))
        problems.append(f"{where}: {error['msg']}{shown}")
    return f"invalid {cls.__name__}: " + "; ".join(problems)


class TrackerSettings(Settings):
    """Every setting has a ``TRACKER_`` environment variable, e.g. ``TRACKER_DATABASE_URL``."""

    model_config = SettingsConfigDict(env_prefix="TRACKER_", extra="ignore", allow_inf_nan=False)

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the history database; default a SQLite file "
        "`tracker.sqlite3` in the working directory. `postgresql://` uses psycopg 3.",
    )
    database_writer: Literal["thread", "process"] = Field(
        default="thread",
        description="Where rows are written: `thread` (in the service's process) or `process` "
        "(a child process, off the service's interpreter lock; for busy schedulers).",
    )
    flush_interval: float = Field(
        default=0.05,
        gt=0,
        le=60,
        description="Seconds between background writes (also the most a hard kill can lose).",
    )
    buffer_size: int = Field(
        default=100_000,
        ge=100,
        description="Records kept in memory per sink while its destination is down.",
    )
    auto_migrate: bool = Field(
        default=True, description="Create/upgrade the tracker's tables with Alembic at start."
    )
    heartbeat_interval: float = Field(default=10.0, gt=0)
    spill_dir: Path | None = Field(
        default=None,
        description="Where records that could not be written before a clean shutdown are kept "
        "until the next start (default $XDG_STATE_HOME/tracker/spill).",
    )
    stale_after: float = Field(
        default=60.0,
        gt=0,
        description="An instance silent this long is dead: its running rows become interrupted.",
    )
    missed_while_down: bool = Field(
        default=True,
        description="When a scheduler starts, record the fire times that fell due while no "
        "tracked scheduler ran (the service down) as one `missed` row per job.",
    )

    @model_validator(mode="after")
    def _heartbeat_within_stale_after(self) -> TrackerSettings:
        # Other hosts take an instance for dead once its heartbeat is older than stale_after:
        # a heartbeat written less often would have them close a live instance's runs.
        if self.heartbeat_interval * 2 > self.stale_after:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval:g} s, "
                f"TRACKER_HEARTBEAT_INTERVAL) must be at most half of stale_after "
                f"({self.stale_after:g} s, TRACKER_STALE_AFTER): other trackers take an "
                "instance whose heartbeat is older than stale_after for dead and close its "
                "runs as interrupted"
            )
        return self
