"""When a job's state changes: the alert policy, and the state machine it drives.

A job is ``up``, ``down`` or ``gone``. Records and notices move it between them; each
move is a *flip* (stored, then notified). Nothing else is notified: a job failing
every minute flips ``up → down`` once, then stays down, quietly, until it succeeds
again (``down → up``, the recovery notice) or ``renotify_after`` passes (a reminder).

=================  ==========================================================
event              effect
=================  ==========================================================
succeeded          failures in a row reset; ``down``/``gone`` → ``up`` (recovered)
                   unless the failure ratio over the window is still too high
failed             ``up → down`` (failed) after ``after_failures`` in a row, or
                   when the failure ratio over ``window`` runs reaches ``failure_ratio``
timed_out notice   ``up → down`` (timed_out), at the deadline, while it runs
timed_out record   counts as a failure; ``up → down`` (timed_out) if not yet down
missed             ``up → down`` (missed)
vanished notice    ``up``/``down`` → ``gone`` (vanished)
job (re)appears    ``gone → up`` (recovered)
job removed        a ``down`` job is reset to ``up`` without a notice
=================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from ..._exceptions import ConfigurationError
from ..._record import Execution, JobState, JobVanished, RunTimedOut, Status
from .model import DEFAULT_SEVERITIES, AlertKind, JobHealth, Severity

_FAIL = "F"
_OK = "S"
MAX_WINDOW = 100


@dataclass(frozen=True, kw_only=True)
class AlertPolicy:
    """When to alert about a job. One default for every job, overridable per job.

    ::

        AlertPolicy(after_failures=3, renotify_after=timedelta(hours=4))
        AlertPolicy(failure_ratio=0.5, window=20)   # half of the last 20 runs failed
        AlertPolicy(enabled=False)                  # never alert about this job
    """

    enabled: bool = True
    after_failures: int = 1
    """Alert after this many failures in a row."""
    failure_ratio: float | None = None
    """Also alert when this share of the last ``window`` runs failed (0 < ratio ≤ 1)."""
    window: int = 10
    """Runs the failure ratio is measured over (at most 100)."""
    on_timed_out: bool = True
    on_missed: bool = True
    on_vanished: bool = True
    recovery: bool = True
    """Send a notice when the job succeeds again after an alert."""
    renotify_after: float | timedelta | None = None
    """Remind (send again) while the job stays down this long; ``None``: never."""
    channels: Iterable[str] | None = None
    """Names of the channels to notify; ``None``: all of them."""
    severities: Mapping[AlertKind | str, Severity | str] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """Severity per kind, over the defaults (failed/timed_out → error, missed → warning,
    vanished → critical, recovered → info)."""

    def __post_init__(self) -> None:
        if self.after_failures < 1:
            raise ConfigurationError(
                f"AlertPolicy.after_failures must be at least 1, got {self.after_failures}"
            )
        if self.failure_ratio is not None and not 0 < self.failure_ratio <= 1:
            raise ConfigurationError(
                f"AlertPolicy.failure_ratio must be in (0, 1], got {self.failure_ratio}"
            )
        if not 1 <= self.window <= MAX_WINDOW:
            raise ConfigurationError(
                f"AlertPolicy.window must be between 1 and {MAX_WINDOW} runs, got {self.window}"
            )
        renotify = self.renotify_after
        if isinstance(renotify, timedelta):
            renotify = renotify.total_seconds()
        if renotify is not None and renotify <= 0:
            raise ConfigurationError(
                f"AlertPolicy.renotify_after must be positive, got {self.renotify_after}"
            )
        object.__setattr__(self, "renotify_after", renotify)
        if self.channels is not None:
            if isinstance(self.channels, str):
                raise ConfigurationError(
                    f"AlertPolicy.channels must be a list of channel names, not the string "
                    f"{self.channels!r}"
                )
            object.__setattr__(self, "channels", tuple(self.channels))
        severities: dict[AlertKind, Severity] = dict(DEFAULT_SEVERITIES)
        for kind, severity in self.severities.items():
            try:
                severities[AlertKind(kind)] = Severity(severity)
            except ValueError:
                raise ConfigurationError(
                    f"AlertPolicy.severities: unknown kind or severity {kind!r}: {severity!r} "
                    f"(kinds: {', '.join(AlertKind)}; severities: {', '.join(Severity)})"
                ) from None
        object.__setattr__(self, "severities", MappingProxyType(severities))

    @property
    def renotify_seconds(self) -> float | None:
        value = self.renotify_after
        return value.total_seconds() if isinstance(value, timedelta) else value

    def severity(self, kind: AlertKind) -> Severity:
        return Severity(self.severities[kind])

    @property
    def tracks_ratio(self) -> bool:
        return self.failure_ratio is not None


@dataclass(slots=True)
class Health:
    """A job's alerting state: one row of ``tracker_alert_jobs``."""

    job_id: str
    job_name: str
    state: JobHealth = JobHealth.UP
    kind: AlertKind | None = None
    """Why the job is down or gone."""
    consecutive_failures: int = 0
    recent: str = ""
    """Outcomes of the last runs, oldest first: ``F`` failed, ``S`` succeeded."""
    down_since: datetime | None = None
    last_alert_at: datetime | None = None
    last_run_id: str | None = None
    version: int = 0
    stored: bool = False

    @property
    def is_default(self) -> bool:
        """Nothing to remember: up, no failures."""
        return self.state is JobHealth.UP and not self.consecutive_failures and not self.recent

    def failure_ratio(self, policy: AlertPolicy) -> float | None:
        """Failed share of the last ``window`` runs, once that many have been seen."""
        if policy.failure_ratio is None or len(self.recent) < policy.window:
            return None
        return self.recent.count(_FAIL) / len(self.recent)

    def ratio_exceeded(self, policy: AlertPolicy) -> bool:
        ratio = self.failure_ratio(policy)
        return (
            ratio is not None
            and policy.failure_ratio is not None
            and (ratio >= policy.failure_ratio)
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Transition:
    """A flip: the job went from ``old`` to ``new`` (or is still down, for a reminder)."""

    old: JobHealth
    new: JobHealth
    kind: AlertKind
    notify: bool = True
    reminder: bool = False
    cause: AlertKind | None = None
    since: datetime | None = None
    """When the job went down (for a recovery or a reminder)."""
    execution: Execution | None = None
    timed_out: RunTimedOut | None = None
    vanished: JobVanished | None = None
    by_ratio: bool = False


AlertEvent = Execution | RunTimedOut | JobVanished | JobState


def _push(health: Health, outcome: str, policy: AlertPolicy) -> None:
    health.recent = (health.recent + outcome)[-policy.window :] if policy.tracks_ratio else ""


def _down(health: Health, kind: AlertKind, now: datetime, **extra: object) -> Transition:
    old = health.state
    health.state = JobHealth.DOWN
    health.kind = kind
    health.down_since = now
    health.last_alert_at = now
    return Transition(old=old, new=JobHealth.DOWN, kind=kind, **extra)  # type: ignore[arg-type]


def _recover(health: Health, policy: AlertPolicy, now: datetime, **extra: object) -> Transition:
    old, cause, since = health.state, health.kind, health.down_since
    health.state = JobHealth.UP
    health.kind = None
    health.down_since = None
    if policy.recovery:
        health.last_alert_at = now
    return Transition(
        old=old,
        new=JobHealth.UP,
        kind=AlertKind.RECOVERED,
        notify=policy.recovery,
        cause=cause,
        since=since,
        **extra,  # type: ignore[arg-type]
    )


def step(
    policy: AlertPolicy, health: Health, event: AlertEvent, now: datetime
) -> Transition | None:
    """Apply one event to ``health`` (in place); the flip it causes, if any."""
    if isinstance(event, Execution):
        return _execution(policy, health, event, now)
    if isinstance(event, RunTimedOut):
        if health.state is JobHealth.UP and policy.on_timed_out:
            return _down(health, AlertKind.TIMED_OUT, now, timed_out=event, execution=event.run)
        return None
    if isinstance(event, JobVanished):
        health.job_name = event.job_name
        if health.state is not JobHealth.GONE and policy.on_vanished:
            old = health.state
            health.state = JobHealth.GONE
            health.kind = AlertKind.VANISHED
            health.down_since = health.down_since or now
            health.last_alert_at = now
            return Transition(old=old, new=JobHealth.GONE, kind=AlertKind.VANISHED, vanished=event)
        return None
    if isinstance(event, JobState):
        if event.removed:
            if health.state is JobHealth.DOWN:  # removed on purpose: forget the incident
                health.state = JobHealth.UP
                health.kind = None
                health.down_since = None
                health.consecutive_failures = 0
                health.recent = ""
            return None
        if health.state is JobHealth.GONE:
            health.job_name = event.job_name
            health.consecutive_failures = 0
            return _recover(health, policy, now)
    return None


def _execution(
    policy: AlertPolicy, health: Health, e: Execution, now: datetime
) -> Transition | None:
    status = e.status
    if status is Status.SUCCEEDED:
        health.job_name = e.job_name
        health.last_run_id = e.run_id
        health.consecutive_failures = 0
        _push(health, _OK, policy)
        if health.state is not JobHealth.UP and not health.ratio_exceeded(policy):
            return _recover(health, policy, now, execution=e)
        return None
    if status is Status.FAILED or status is Status.TIMED_OUT:
        health.job_name = e.job_name
        health.last_run_id = e.run_id
        health.consecutive_failures += 1
        _push(health, _FAIL, policy)
        if health.state is not JobHealth.UP:
            return None
        if status is Status.TIMED_OUT and policy.on_timed_out:
            return _down(health, AlertKind.TIMED_OUT, now, execution=e)
        if health.consecutive_failures >= policy.after_failures:
            return _down(health, AlertKind.FAILED, now, execution=e)
        if health.ratio_exceeded(policy):
            return _down(health, AlertKind.FAILED, now, execution=e, by_ratio=True)
        return None
    if status is Status.MISSED and health.state is JobHealth.UP and policy.on_missed:
        health.job_name = e.job_name
        return _down(health, AlertKind.MISSED, now, execution=e)
    return None


def remind(policy: AlertPolicy, health: Health, now: datetime) -> Transition | None:
    """A reminder flip when the job has been down ``renotify_after`` since the last notice."""
    interval = policy.renotify_seconds
    if interval is None or health.state is JobHealth.UP or health.kind is None:
        return None
    last = health.last_alert_at or health.down_since
    if last is not None and (now - last).total_seconds() < interval:
        return None
    health.last_alert_at = now
    return Transition(
        old=health.state,
        new=health.state,
        kind=health.kind,
        reminder=True,
        cause=health.kind,
        since=health.down_since,
    )


def relevant(policy: AlertPolicy, cached: Health | None, event: AlertEvent) -> bool:
    """Whether ``event`` may change the state of a job whose cached state is ``cached``.

    Most records change nothing (a success of a healthy job): those never reach the
    database.
    """
    if not policy.enabled:
        return False
    if isinstance(event, Execution):
        status = event.status
        if status is Status.FAILED or status is Status.TIMED_OUT or status is Status.MISSED:
            return True
        if status is Status.SUCCEEDED:
            return policy.tracks_ratio or (cached is not None and not cached.is_default)
        return False
    if isinstance(event, RunTimedOut | JobVanished):
        return True
    if isinstance(event, JobState):
        if cached is None:
            return False
        return cached.state is JobHealth.GONE or (event.removed and cached.state is JobHealth.DOWN)
    return False
