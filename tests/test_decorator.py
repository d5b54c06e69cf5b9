"""@tracked_job: a faithful wrapper that records runs, and never hurts the job."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import pickle
import re
import weakref

import pytest
import support

from tracker import Origin, Status, current_run, is_tracked, tracked_job


def test_keeps_identity_for_pickling_and_job_stores() -> None:
    """The wrapper keeps module, name and qualname: references resolve to the tracked function."""
    assert support.ok_job.__module__ == "support"
    assert support.ok_job.__qualname__ == "ok_job"
    assert pickle.loads(pickle.dumps(support.ok_job)) is support.ok_job
    from apscheduler.util import obj_to_ref, ref_to_obj

    assert ref_to_obj(obj_to_ref(support.failing_job)) is support.failing_job
    assert is_tracked(support.ok_job) and not is_tracked(support.plain_job)


def test_async_function_stays_a_coroutine_function() -> None:
    """APScheduler awaits only coroutine functions: the wrapper of an async def must be one."""
    from apscheduler.util import iscoroutinefunction_partial

    assert inspect.iscoroutinefunction(support.async_ok_job)
    assert iscoroutinefunction_partial(support.async_ok_job)
    assert not inspect.iscoroutinefunction(support.ok_job)


def test_pass_through_without_tracker() -> None:
    """With no tracker open, the function runs as if undecorated and its exception is unchanged."""
    from tracker import _context

    assert _context.default_hub() is None
    assert support.ok_job() == "ok"
    with pytest.raises(ValueError, match="invoice 42"):
        support.failing_job()


def test_direct_call_is_recorded(tracker) -> None:
    """Called directly while a tracker is open, a call becomes a run with origin `direct`."""
    assert support.ok_job() == "ok"
    with pytest.raises(ValueError, match="invoice 42"):
        support.failing_job()
    assert tracker.flush()
    runs = {e.job_id: e for e in tracker.executions()}
    assert runs["ok_job"].status is Status.SUCCEEDED
    assert runs["ok_job"].origin is Origin.DIRECT
    failed = runs["failing_job"]
    assert failed.status is Status.FAILED
    assert failed.error_type == "ValueError"
    assert failed.error_message == "invoice 42 could not be synced"
    assert "failing_job" in failed.traceback and "invoice 42" in failed.traceback
    assert dict(failed.tags) == {"team": "billing"}


def test_job_exception_propagates_unchanged(tracker) -> None:
    """The very exception object the job raised reaches the caller."""
    error = ValueError("mine")

    @tracked_job
    def raiser() -> None:
        raise error

    with pytest.raises(ValueError, match="mine") as caught:
        raiser()
    assert caught.value is error


def test_job_reads_its_own_run(tracker) -> None:
    """Inside a run, current_run() gives the job its run id, job id and scheduled time."""
    seen = {}

    @tracked_job
    def introspect() -> None:
        run = current_run()
        assert run is not None
        seen.update(run_id=run.run_id, job_id=run.job_id, scheduled_at=run.scheduled_at)

    introspect()
    assert current_run() is None
    assert tracker.flush()
    (record,) = tracker.executions(job_id=seen["job_id"])
    assert record.run_id == seen["run_id"]
    assert record.scheduled_at == seen["scheduled_at"]


def test_a_tracked_call_inside_a_run_is_its_own_run_and_the_outer_one_comes_back(tracker) -> None:
    """A tracked function called from a tracked job: current_run() is the inner run while it
    runs (even when it fails), the outer one again after it, and nothing once both ended."""
    seen: dict[str, str] = {}

    @tracked_job
    def inner(fail: bool) -> None:
        run = current_run()
        assert run is not None
        seen["inner" if not fail else "inner_failed"] = run.run_id
        if fail:
            raise KeyError("inner")

    @tracked_job
    def outer() -> None:
        before = current_run()
        assert before is not None
        inner(False)
        with pytest.raises(KeyError):
            inner(True)
        after = current_run()
        assert after is not None
        seen["outer"], seen["after"] = before.run_id, after.run_id

    outer()
    assert current_run() is None
    assert seen["after"] == seen["outer"]
    assert len({seen["outer"], seen["inner"], seen["inner_failed"]}) == 3
    assert tracker.flush()
    statuses = {e.run_id: e.status for e in tracker.executions()}
    assert statuses == {
        seen["outer"]: Status.SUCCEEDED,
        seen["inner"]: Status.SUCCEEDED,
        seen["inner_failed"]: Status.FAILED,
    }


def test_a_failed_run_does_not_keep_its_error_and_frames_alive(tracker) -> None:
    """Once a failed run is recorded, its exception (and through its traceback the job's
    frames and their locals: a large payload, say) is freed at once, not left for the garbage
    collector: the tracker keeps no reference cycle through it."""
    errors: list[weakref.ref[BaseException]] = []

    class Boom(ValueError):  # built-in exceptions take no weak references; subclasses do
        pass

    def watched(size: int) -> Boom:
        error = Boom(f"failed with {size} bytes in hand")
        errors.append(weakref.ref(error))
        return error

    @tracked_job
    def boom() -> None:
        payload = bytearray(10_000_000)  # held by the job's frame, via the traceback
        raise watched(len(payload))  # (no local of the job's own refers to its error)

    gc.disable()
    try:
        with contextlib.suppress(ValueError):
            boom()
        assert tracker.flush()
        (record,) = tracker.executions(job_id=boom.__qualname__)
        assert record.status is Status.FAILED
        assert errors[0]() is None
    finally:
        gc.enable()


def test_async_direct_call_is_recorded(tracker) -> None:
    """An async tracked function awaited directly is recorded, failure included."""
    asyncio.run(support.async_ok_job())
    with pytest.raises(RuntimeError):
        asyncio.run(support.async_failing_job())
    assert tracker.flush()
    statuses = {e.job_id: e.status for e in tracker.executions()}
    assert statuses == {"async_ok_job": Status.SUCCEEDED, "async_failing_job": Status.FAILED}


def test_options_are_validated_to_strings() -> None:
    """Tag keys and values are stored as strings whatever was passed."""

    @tracked_job(tags={"attempt": 3})
    def tagged() -> None: ...

    from tracker._decorator import job_options

    options = job_options(tagged)
    assert options is not None and dict(options.tags) == {"attempt": "3"}


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("300", TypeError, "max_runtime must be a number of seconds or None, got str '300'"),
        (True, TypeError, "max_runtime must be a number of seconds or None, got bool True"),
        (0, ValueError, "max_runtime must be a finite number of seconds above 0, got 0"),
        (-1, ValueError, "max_runtime must be a finite number of seconds above 0, got -1"),
        (
            float("nan"),
            ValueError,
            "max_runtime must be a finite number of seconds above 0, got nan",
        ),
        (
            float("inf"),
            ValueError,
            "max_runtime must be a finite number of seconds above 0, got inf",
        ),
    ],
)
def test_a_max_runtime_that_cannot_be_a_deadline_is_refused_at_decoration(
    value, error, message
) -> None:
    """``@tracked_job(max_runtime=...)`` takes None or a finite number of seconds above 0; else
    a TypeError or ValueError naming it, when decorating (a string made the watchdog fail on
    every look; 0, a negative number or NaN made every run ``timed_out``)."""
    with pytest.raises(error, match=re.escape(message)):

        @tracked_job(max_runtime=value)
        def job() -> None: ...


def test_a_valid_max_runtime_is_kept() -> None:
    """Whole and fractional seconds, and other real numbers (as a float), are deadlines."""
    from fractions import Fraction

    from tracker._decorator import job_options

    for value, kept in [(300, 300), (0.5, 0.5), (Fraction(3, 2), 1.5), (None, None)]:

        @tracked_job(max_runtime=value)
        def job() -> None: ...

        options = job_options(job)
        assert options is not None and options.max_runtime == kept
