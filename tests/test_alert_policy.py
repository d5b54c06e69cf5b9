"""The alert policy's state machine: alerts on changes of state, not on every failed run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tracker import ConfigurationError, Execution, JobState, JobVanished, RunTimedOut, Status
from tracker.sinks.alerts import AlertKind, AlertPolicy, JobHealth, Severity
from tracker.sinks.alerts.policy import Health, Transition, relevant, remind, step

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def run(status: Status, n: int = 0, job: str = "sync") -> Execution:
    return Execution(
        run_id=f"run-{n}",
        job_id=job,
        job_name=job,
        status=status,
        scheduled_at=T0 + timedelta(minutes=n),
        started_at=T0 + timedelta(minutes=n),
        finished_at=T0 + timedelta(minutes=n, seconds=1),
        duration_s=1.0,
        error_type="ValueError" if status is Status.FAILED else None,
        error_message="boom" if status is Status.FAILED else None,
    )


def feed(policy: AlertPolicy, health: Health, events: list[object]) -> list[Transition]:
    flips = []
    for i, event in enumerate(events):
        t = step(policy, health, event, T0 + timedelta(minutes=i))  # type: ignore[arg-type]
        if t is not None:
            flips.append(t)
    return flips


def test_ten_failures_flip_once_and_a_success_recovers_once() -> None:
    """A job failing 10 times in a row flips down once; the next success flips it up once."""
    health = Health(job_id="sync", job_name="sync")
    flips = feed(AlertPolicy(), health, [run(Status.FAILED, i) for i in range(10)])
    assert [(f.old, f.new, f.kind) for f in flips] == [
        (JobHealth.UP, JobHealth.DOWN, AlertKind.FAILED)
    ]
    assert health.consecutive_failures == 10
    recovered = feed(AlertPolicy(), health, [run(Status.SUCCEEDED, 11), run(Status.SUCCEEDED, 12)])
    assert [(f.new, f.kind, f.cause) for f in recovered] == [
        (JobHealth.UP, AlertKind.RECOVERED, AlertKind.FAILED)
    ]
    assert health.consecutive_failures == 0


def test_after_failures_waits_for_n_in_a_row() -> None:
    """With after_failures=3, two failures then a success alert nothing; three in a row do."""
    policy = AlertPolicy(after_failures=3)
    health = Health(job_id="sync", job_name="sync")
    events = [run(Status.FAILED, 0), run(Status.FAILED, 1), run(Status.SUCCEEDED, 2)]
    assert feed(policy, health, events) == []
    flips = feed(policy, health, [run(Status.FAILED, i) for i in range(3, 6)])
    assert len(flips) == 1 and flips[0].execution is not None
    assert flips[0].execution.run_id == "run-5"


def test_failure_ratio_alerts_once_and_recovers_below_the_threshold() -> None:
    """Alternating failures trip a 50% ratio over 4 runs once, without flapping on each success."""
    policy = AlertPolicy(after_failures=5, failure_ratio=0.5, window=4)
    health = Health(job_id="sync", job_name="sync")
    pattern = [Status.FAILED, Status.SUCCEEDED] * 6
    flips = feed(policy, health, [run(s, i) for i, s in enumerate(pattern)])
    assert [(f.new, f.by_ratio) for f in flips] == [(JobHealth.DOWN, True)]
    flips = feed(policy, health, [run(Status.SUCCEEDED, 20 + i) for i in range(3)])
    assert [f.kind for f in flips] == [AlertKind.RECOVERED]


def test_timed_out_notice_alerts_and_the_late_record_adds_nothing() -> None:
    """The deadline notice flips the job down; the run's timed_out record adds nothing."""
    health = Health(job_id="sync", job_name="sync")
    notice = RunTimedOut(run=run(Status.RUNNING), max_runtime=0.3, detected_at=T0)
    flips = feed(AlertPolicy(), health, [notice, run(Status.TIMED_OUT)])
    assert [f.kind for f in flips] == [AlertKind.TIMED_OUT]
    assert flips[0].timed_out is notice
    assert [f.kind for f in feed(AlertPolicy(), health, [run(Status.SUCCEEDED)])] == [
        AlertKind.RECOVERED
    ]


def test_missed_and_vanished_alert_and_a_comeback_recovers() -> None:
    """A missed fire time flips down (warning); a vanished job goes gone, then comes back."""
    policy = AlertPolicy()
    health = Health(job_id="sync", job_name="sync")
    assert [f.kind for f in feed(policy, health, [run(Status.MISSED)])] == [AlertKind.MISSED]
    assert policy.severity(AlertKind.MISSED) is Severity.WARNING
    gone = JobVanished(job_id="sync", job_name="sync", reason="store dropped it", detected_at=T0)
    flips = feed(policy, health, [JobState(job_id="sync", job_name="sync", removed=True), gone])
    assert [(f.old, f.new, f.kind) for f in flips] == [
        (JobHealth.UP, JobHealth.GONE, AlertKind.VANISHED)
    ]
    assert policy.severity(AlertKind.VANISHED) is Severity.CRITICAL
    back = feed(policy, health, [JobState(job_id="sync", job_name="sync")])
    assert [(f.new, f.kind, f.cause) for f in back] == [
        (JobHealth.UP, AlertKind.RECOVERED, AlertKind.VANISHED)
    ]


def test_removing_a_failing_job_forgets_the_incident_quietly() -> None:
    """A job removed on purpose while down is reset without a recovery notice."""
    health = Health(job_id="sync", job_name="sync")
    feed(AlertPolicy(), health, [run(Status.FAILED)])
    flips = feed(AlertPolicy(), health, [JobState(job_id="sync", job_name="sync", removed=True)])
    assert flips == [] and health.is_default


def test_reminders_follow_renotify_after() -> None:
    """A job still down is reminded once renotify_after has passed since the last notice."""
    policy = AlertPolicy(renotify_after=timedelta(hours=1))
    health = Health(job_id="sync", job_name="sync")
    feed(policy, health, [run(Status.FAILED)])
    assert remind(policy, health, T0 + timedelta(minutes=30)) is None
    reminder = remind(policy, health, T0 + timedelta(hours=1, minutes=1))
    assert reminder is not None and reminder.reminder and reminder.kind is AlertKind.FAILED
    assert remind(policy, health, T0 + timedelta(hours=1, minutes=2)) is None
    assert remind(AlertPolicy(), health, T0 + timedelta(days=9)) is None


def test_healthy_successes_are_not_relevant() -> None:
    """A success of a healthy job never reaches the database; failures and notices do."""
    policy = AlertPolicy()
    assert not relevant(policy, None, run(Status.SUCCEEDED))
    assert relevant(policy, None, run(Status.FAILED))
    assert relevant(
        policy,
        Health(job_id="sync", job_name="sync", consecutive_failures=1),
        run(Status.SUCCEEDED),
    )
    assert not relevant(AlertPolicy(enabled=False), None, run(Status.FAILED))
    assert relevant(AlertPolicy(failure_ratio=0.5), None, run(Status.SUCCEEDED))


def test_disabled_kinds_and_recoveries() -> None:
    """on_missed=False ignores missed runs; recovery=False flips back up without a notice."""
    policy = AlertPolicy(on_missed=False, recovery=False)
    health = Health(job_id="sync", job_name="sync")
    assert feed(policy, health, [run(Status.MISSED)]) == []
    feed(policy, health, [run(Status.FAILED)])
    (flip,) = feed(policy, health, [run(Status.SUCCEEDED)])
    assert flip.kind is AlertKind.RECOVERED and not flip.notify


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"after_failures": 0}, "after_failures must be at least 1"),
        ({"failure_ratio": 1.5}, "failure_ratio must be in (0, 1]"),
        ({"window": 500}, "window must be between 1 and 100"),
        ({"renotify_after": timedelta(0)}, "renotify_after must be positive"),
        ({"channels": "slack"}, "must be a list of channel names"),
        ({"severities": {"failed": "loud"}}, "unknown kind or severity"),
    ],
)
def test_bad_policies_are_refused(options: dict[str, object], message: str) -> None:
    """A policy that can't work raises ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace("]", r"\]")):
        AlertPolicy(**options)  # type: ignore[arg-type]


def test_severities_can_be_overridden() -> None:
    """Severity per kind defaults to failed→error, missed→warning, and can be changed."""
    policy = AlertPolicy(severities={"missed": "error"})
    assert policy.severity(AlertKind.MISSED) is Severity.ERROR
    assert policy.severity(AlertKind.FAILED) is Severity.ERROR
    assert policy.severity(AlertKind.RECOVERED) is Severity.INFO
