"""Errors raised by tracker.

::

    TrackerError
    ├── ConfigurationError      bad settings (URL, channel, option)
    ├── DatabaseUnavailableError the database can't be reached
    ├── JobNotFoundError        no job by that id (also a KeyError)
    ├── InvalidScheduleError    a trigger specification that can't be used (also a ValueError)
    └── TrackerClosedError      the tracker was closed
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base class of every error tracker raises on purpose."""


class ConfigurationError(TrackerError, ValueError):
    """A setting or option has a value that can't be used."""


class DatabaseUnavailableError(TrackerError):
    """The tracker's database can't be reached or used."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Database {url} is unavailable: {reason}")
        self.url = url
        self.reason = reason


class JobNotFoundError(TrackerError, KeyError):
    """No job by the given id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"No job by the id of {job_id!r} was found")
        self.job_id = job_id

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class InvalidScheduleError(TrackerError, ValueError):
    """A schedule (cron expression, interval, date) that can't be used."""


class TrackerClosedError(TrackerError):
    """The tracker was closed and takes no more work."""
