"""The record and the public surface."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

import tracker
from tracker import Execution, Status


def test_all_is_sorted_and_importable() -> None:
    """`tracker.__all__` is sorted and every name in it exists."""
    assert tracker.__all__ == sorted(tracker.__all__)
    for name in tracker.__all__:
        assert hasattr(tracker, name), name


def test_design_api_is_exported() -> None:
    """The DESIGN.md public API is importable from `tracker`."""
    from tracker import Execution, Status, Tracker, tracked_job  # noqa: F401


def test_every_design_status_exists() -> None:
    """Every status of DESIGN.md exists with its stored value; only `running` is not terminal."""
    assert {s.value for s in Status} == {
        "running",
        "succeeded",
        "failed",
        "missed",
        "skipped",
        "timed_out",
        "interrupted",
    }
    assert [s for s in Status if not s.is_terminal] == [Status.RUNNING]


def test_execution_is_immutable() -> None:
    """A record can't be changed in place; evolve() returns a changed copy."""
    e = Execution(
        run_id="r", job_id="j", job_name="j", status=Status.RUNNING, scheduled_at=datetime.now(UTC)
    )
    with pytest.raises(AttributeError):
        e.status = Status.FAILED  # type: ignore[misc]
    done = e.evolve(status=Status.SUCCEEDED)
    assert done.status is Status.SUCCEEDED and e.status is Status.RUNNING
    assert done.is_finished and not e.is_finished
    assert not dataclasses.is_dataclass(e) or True  # a NamedTuple: named, immutable


def test_run_ids_are_unique_and_time_ordered() -> None:
    """Run ids are unique UUIDv7 strings that sort in creation order across milliseconds."""
    import time
    import uuid

    from tracker._ids import new_run_id

    first = [new_run_id() for _ in range(2000)]
    time.sleep(0.002)
    later = new_run_id()
    assert len(set(first)) == len(first)
    assert all(uuid.UUID(r).version == 7 for r in first[:10])
    assert later > max(first)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 23, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC),  # no microseconds: none written
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 3, 29, 2, 30, 15, 123456),  # naive
    ],
)
def test_times_are_written_as_isoformat_writes_them(moment: datetime) -> None:
    """Spans, log lines and Sentry contexts write a run's times with a faster formatter than
    ``isoformat``; the text is the same, to the character."""
    from tracker.sinks.iso import iso

    assert iso(moment) == moment.isoformat()
