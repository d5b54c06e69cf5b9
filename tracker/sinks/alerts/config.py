"""Alert configuration in code: channels, the policy, per-job policies, delivery knobs."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from ..._exceptions import ConfigurationError
from .channels import LogChannel
from .delivery import Channel
from .policy import AlertPolicy
from .settings import AlertSettings


@dataclass(frozen=True, kw_only=True)
class AlertConfig:
    """How a :class:`~tracker.Tracker` alerts::

        Tracker(alerts=AlertConfig(
            channels=[SlackChannel(os.environ["SLACK_URL"]), LogChannel()],
            policy=AlertPolicy(after_failures=3, renotify_after=timedelta(hours=6)),
            job_policies={"nightly-report": AlertPolicy(on_missed=False)},
        ))

    ``channels=None`` takes them from ``TRACKER_ALERT_*`` (or the log channel when none
    is set). Every channel is checked when the tracker starts: a bad URL or a missing
    SMTP host raises :class:`~tracker.ConfigurationError`.
    """

    channels: Sequence[Channel] | None = None
    policy: AlertPolicy = field(default_factory=AlertPolicy)
    job_policies: Mapping[str, AlertPolicy] = field(default_factory=lambda: MappingProxyType({}))
    """Policies by job id, or by job name (the id wins)."""
    max_attempts: int = 5
    backoff: float = 1.0
    """Seconds before the first retry; doubled for each further one (with jitter)."""
    max_backoff: float = 60.0
    queue_size: int = 1_000
    """Alerts waiting per channel; beyond it new ones are dropped (and counted)."""
    shutdown_timeout: float = 5.0
    """Seconds pending alerts get to go out when the tracker closes."""
    refresh_interval: float = 5.0
    """Seconds between reloads of job states written by other replicas."""
    keep: timedelta = timedelta(days=90)
    """How long processed flips (and their deliveries) are kept."""

    def __post_init__(self) -> None:
        checks = [
            ("max_attempts", self.max_attempts >= 1),
            ("backoff", self.backoff > 0),
            ("max_backoff", self.max_backoff > 0),
            ("queue_size", self.queue_size >= 1),
            ("shutdown_timeout", self.shutdown_timeout >= 0),
            ("refresh_interval", self.refresh_interval > 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ConfigurationError(
                    f"AlertConfig.{name} is out of range: {getattr(self, name)!r}"
                )
        if not isinstance(self.policy, AlertPolicy):
            raise ConfigurationError(
                f"AlertConfig.policy must be an AlertPolicy, not {type(self.policy).__name__}"
            )
        for key, policy in self.job_policies.items():
            if not isinstance(policy, AlertPolicy):
                raise ConfigurationError(
                    f"AlertConfig.job_policies[{key!r}] must be an AlertPolicy, "
                    f"not {type(policy).__name__}"
                )
        object.__setattr__(self, "job_policies", MappingProxyType(dict(self.job_policies)))
        if self.channels is not None:
            check_channels(self.channels)
            object.__setattr__(self, "channels", tuple(self.channels))
            self.check_policy_channels([c.name for c in self.resolved_channels()])

    @classmethod
    def from_settings(cls, settings: AlertSettings | None = None) -> AlertConfig:
        """Everything from ``TRACKER_ALERT_*`` (or ``settings``)."""
        s = settings or AlertSettings()
        return cls(
            channels=s.channels(),
            policy=AlertPolicy(
                after_failures=s.after_failures,
                failure_ratio=s.failure_ratio,
                window=s.window,
                renotify_after=s.renotify_after,
                recovery=s.recovery,
            ),
            max_attempts=s.max_attempts,
            backoff=s.backoff,
            max_backoff=s.max_backoff,
            queue_size=s.queue_size,
            shutdown_timeout=s.shutdown_timeout,
        )

    def resolved_channels(self) -> list[Channel]:
        """The channels to use: the configured ones, else those of the environment."""
        if self.channels is not None:
            return list(self.channels) or [LogChannel()]
        channels = AlertSettings().channels()
        check_channels(channels)
        return channels

    def check_policy_channels(self, names: Collection[str]) -> None:
        """Every channel a policy names is one of ``names`` (the channels in use).

        A misspelt name would otherwise send that policy's alerts nowhere.
        """
        policies = [("AlertConfig.policy", self.policy)] + [
            (f"AlertConfig.job_policies[{key!r}]", policy)
            for key, policy in self.job_policies.items()
        ]
        for where, policy in policies:
            for name in policy.channels or ():
                if name not in names:
                    known = ", ".join(repr(n) for n in names)
                    raise ConfigurationError(
                        f"{where} names alert channel {name!r}, which is not configured "
                        f"(the channels are: {known})"
                    )

    def policy_for(self, job_id: str, job_name: str) -> AlertPolicy:
        policies = self.job_policies
        if policies:
            found = policies.get(job_id) or policies.get(job_name)
            if found is not None:
                return found
        return self.policy


def check_channels(channels: Sequence[object]) -> None:
    """Every item is a channel, and their names are unique."""
    seen: set[str] = set()
    for channel in channels:
        name = getattr(channel, "name", None)
        if not isinstance(name, str) or not callable(getattr(channel, "send", None)):
            raise ConfigurationError(
                f"{channel!r} is not an alert channel (it needs a name and a send(alert) method)"
            )
        if not name or len(name) > 64:
            raise ConfigurationError(f"alert channel name {name!r} must be 1 to 64 characters")
        if name in seen:
            raise ConfigurationError(
                f"two alert channels are named {name!r}: give each a distinct name= "
                "(deliveries are recorded per channel name)"
            )
        seen.add(name)


def resolve_alerts(alerts: AlertConfig | bool | None) -> AlertConfig | None:
    """The alert configuration a Tracker runs with; ``None`` when alerts are off.

    ``None`` (the default) turns alerts on when ``TRACKER_ALERT_*`` configures a
    channel or sets ``TRACKER_ALERT_ENABLED=true``; ``True`` turns them on from the
    environment (the log channel when no channel is set); ``False`` turns them off.
    """
    if alerts is False:
        return None
    if isinstance(alerts, AlertConfig):
        if alerts.channels is None:  # the environment's channels: checked before anything starts
            alerts.check_policy_channels([c.name for c in alerts.resolved_channels()])
        return alerts
    if alerts is None or alerts is True:
        settings = AlertSettings()
        if alerts is None and not settings.active:
            return None
        return AlertConfig.from_settings(settings)
    raise ConfigurationError(
        f"alerts must be an AlertConfig, True or False, not {type(alerts).__name__}"
    )
