"""Background delivery: retries with backoff, no retry for permanent errors, isolation, bounds."""

# ruff: noqa: F811 - pytest fixtures imported from test_alert_receivers are parameters here

from __future__ import annotations

import threading
from typing import Any

from support import wait_for
from test_alert_channels import failed_alert
from test_alert_receivers import HANG, make_receiver  # noqa: F401 - fixture

from tracker import SlackChannel, WebhookChannel
from tracker.sinks.alerts.delivery import ChannelWorker, Item, backoff_delay


class Outcomes:
    """Collects (channel, outcome, attempts) reported by workers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, channel: str, outcome: str, item: Item, error: str | None) -> None:
        with self._lock:
            self.seen.append((channel, outcome, item.attempts))

    def of(self, channel: str) -> list[str]:
        with self._lock:
            return [o for c, o, _ in self.seen if c == channel]


def worker(channel: Any, outcomes: Outcomes, **options: Any) -> ChannelWorker:
    options.setdefault("backoff", 0.02)
    options.setdefault("max_backoff", 0.1)
    return ChannelWorker(channel, on_outcome=outcomes, **options)


def test_three_500s_then_200_delivers_the_alert_once(make_receiver: Any) -> None:
    """A receiver answering 500 three times then 200 gets the alert once, after three retries."""
    target = make_receiver([500, 500, 500], default=200)
    outcomes = Outcomes()
    w = worker(WebhookChannel(target.url), outcomes)
    try:
        w.submit(failed_alert())
        wait_for(lambda: outcomes.of("webhook")[-1:] == ["sent"])
        assert w.wait_idle(5)
    finally:
        w.close(1)
    assert outcomes.of("webhook") == ["retried", "retried", "retried", "sent"]
    assert target.answered == [500, 500, 500, 200]
    ids = {r.headers["X-Tracker-Alert-Id"] for r in target.requests}
    assert len(ids) == 1  # the same alert each time: receivers can drop duplicates


def test_permanent_errors_are_not_retried(make_receiver: Any) -> None:
    """A 404 is reported as failed after one attempt."""
    target = make_receiver(default=404)
    outcomes = Outcomes()
    w = worker(SlackChannel(target.url), outcomes)
    try:
        w.submit(failed_alert())
        wait_for(lambda: outcomes.of("slack"))
        assert w.wait_idle(5)
    finally:
        w.close(1)
    assert outcomes.of("slack") == ["failed"]
    assert len(target.requests) == 1


def test_transient_errors_give_up_after_max_attempts(make_receiver: Any) -> None:
    """A receiver that keeps answering 503 is tried max_attempts times, then reported failed."""
    target = make_receiver(default=503)
    outcomes = Outcomes()
    w = worker(WebhookChannel(target.url), outcomes, max_attempts=3)
    try:
        w.submit(failed_alert())
        wait_for(lambda: "failed" in outcomes.of("webhook"))
    finally:
        w.close(1)
    assert outcomes.of("webhook") == ["retried", "retried", "failed"]
    assert len(target.requests) == 3


def test_a_hanging_channel_does_not_hold_up_another(make_receiver: Any) -> None:
    """While one channel's receiver hangs, another channel delivers every alert."""
    hanging, healthy = make_receiver(default=HANG), make_receiver()
    outcomes = Outcomes()
    stuck = worker(WebhookChannel(hanging.url, name="stuck", timeout=30), outcomes)
    fine = worker(WebhookChannel(healthy.url, name="fine"), outcomes)
    alerts = [failed_alert() for _ in range(3)]
    try:
        for alert in alerts:
            stuck.submit(alert)
            fine.submit(alert)
        healthy.wait_for(3)
        wait_for(lambda: outcomes.of("fine") == ["sent"] * 3)
        hanging.wait_for(1)
        assert outcomes.of("stuck") == []
        assert len(hanging.requests) == 1 and stuck.pending == 3
    finally:
        left = stuck.close(0.1)
        fine.close(1)
    # Handed back: the two never attempted, and the one still in flight (it may finish on
    # its own, but nobody waits for its outcome any more).
    assert [item.alert.id for item in left] == [alert.id for alert in alerts]


def test_a_full_queue_drops_and_counts() -> None:
    """Beyond the queue's capacity, new alerts are dropped and reported as such."""
    release = threading.Event()

    class Slow:
        name = "slow"

        def send(self, alert: object) -> None:
            release.wait(5)

        def close(self) -> None:
            return None

    outcomes = Outcomes()
    w = worker(Slow(), outcomes, capacity=2)
    try:
        accepted = [w.submit(failed_alert()) for _ in range(6)]
        assert accepted.count(False) >= 3
        assert outcomes.of("slow").count("dropped") == accepted.count(False)
    finally:
        release.set()
        w.close(1)


def test_inactive_channels_are_skipped() -> None:
    """A channel that says it is inactive (Sentry not initialised) is skipped, not failed."""

    class Off:
        name = "off"
        active = False

        def send(self, alert: object) -> None:
            raise AssertionError("must not be called")

        def close(self) -> None:
            return None

    outcomes = Outcomes()
    w = worker(Off(), outcomes)
    try:
        w.submit(failed_alert())
        wait_for(lambda: outcomes.of("off"))
    finally:
        w.close(1)
    assert outcomes.of("off") == ["skipped"]


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    """Retry delays double from the base, jittered within [half, full], capped; Retry-After wins."""
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (8, 60.0)]:
        delays = [backoff_delay(attempt, 1.0, 60.0) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
    assert backoff_delay(1, 1.0, 60.0, retry_after=7) == 7
    assert backoff_delay(1, 1.0, 60.0, retry_after=600) == 60
