"""Alerts end to end: a Tracker, a real database, real schedulers, real receivers on loopback."""

# ruff: noqa: F811 - pytest fixtures imported from test_alert_receivers are parameters here

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry
from support import wait_for
from test_alert_channels import failed_alert
from test_alert_receivers import HANG, Receiver, make_receiver, receiver  # noqa: F401 - fixtures

from tracker import (
    AlertConfig,
    AlertPolicy,
    ConfigurationError,
    Execution,
    LogChannel,
    Status,
    Tracker,
    TrackerSettings,
    WebhookChannel,
    tracked_job,
)
from tracker._ids import new_run_id
from tracker.sinks.alerts import JobHealth

FLAKY = {"fail": True}


@tracked_job
def flaky_job() -> None:
    if FLAKY["fail"]:
        raise RuntimeError("upstream returned 502")


@tracked_job
def always_failing_job() -> None:
    raise RuntimeError("disk full")


MakeTracker = Callable[..., Tracker]


@pytest.fixture
def make_tracker(database_url: str) -> Iterator[MakeTracker]:
    """Trackers with alerts on the parametrized database (closed after the test)."""
    made: list[Tracker] = []

    def make(*channels: Any, policy: AlertPolicy | None = None, **options: Any) -> Tracker:
        config = AlertConfig(
            channels=list(channels),
            policy=policy or AlertPolicy(),
            backoff=options.pop("backoff", 0.02),
            max_backoff=0.1,
            shutdown_timeout=options.pop("shutdown_timeout", 2.0),
        )
        options.setdefault("metrics", False)
        settings = TrackerSettings(flush_interval=options.pop("flush_interval", 0.02))
        tracker = Tracker(database_url, settings=settings, alerts=config, **options)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=5)


def record(
    tracker: Tracker, status: Status, job: str = "sync", n: int = 0, **changes: Any
) -> Execution:
    """Record one finished run of ``job`` through ``tracker``'s hub, as an integration does
    (``changes``: fields of the record to set otherwise)."""
    now = datetime.now(UTC)
    execution = Execution(
        run_id=new_run_id(),
        job_id=job,
        job_name=job,
        status=status,
        scheduled_at=now - timedelta(seconds=1),
        started_at=now,
        finished_at=now,
        duration_s=0.0,
        error_type="RuntimeError" if status is Status.FAILED else None,
        error_message=f"attempt {n} failed" if status is Status.FAILED else None,
    ).evolve(**changes)
    tracker.hub.record(execution)
    return execution


def settle(*trackers: Tracker) -> None:
    """Everything recorded so far is evaluated, stored and delivered."""
    for tracker in trackers:
        assert tracker.flush(10)
        assert tracker.alerts is not None and tracker.alerts.wait_delivered(10)


def kinds(receiver: Receiver) -> list[str]:
    return [body["kind"] for body in receiver.bodies()]


def test_ten_failures_one_alert_then_one_recovery(
    make_tracker: MakeTracker, receiver: Receiver
) -> None:
    """A job failing 10 times in a row alerts once; after a success, one recovery notice."""
    tracker = make_tracker(WebhookChannel(receiver.url))
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    FLAKY["fail"] = True
    scheduler.add_job(
        flaky_job, "interval", seconds=0.05, id="flaky", coalesce=False, misfire_grace_time=None
    )
    scheduler.start()
    try:
        wait_for(
            lambda: (
                tracker.flush(5)
                and len(tracker.executions("flaky", status="failed", limit=20)) >= 10
            )
        )
        FLAKY["fail"] = False
        wait_for(
            lambda: (
                tracker.flush(5)
                and len(tracker.executions("flaky", status="succeeded", limit=5)) >= 5
            )
        )
    finally:
        scheduler.shutdown(wait=True)
    settle(tracker)
    assert kinds(receiver) == ["failed", "recovered"]
    failed, recovered = receiver.bodies()
    assert failed["job"]["id"] == "flaky" and failed["severity"] == "error"
    assert failed["run"]["error_message"] == "upstream returned 502"
    assert failed["consecutive_failures"] == 1
    assert recovered["cause"] == "failed" and recovered["state"] == "up"
    assert tracker.alerts is not None
    flips = tracker.alerts.flips("flaky")
    assert [(f["old_state"], f["new_state"]) for f in flips] == [("down", "up"), ("up", "down")]


def test_a_failure_and_a_success_in_one_batch_alert_then_recover(
    make_tracker: MakeTracker, receiver: Receiver
) -> None:
    """A job that fails and succeeds again before the alerts look (a job every few
    milliseconds) is reported failed, then recovered; its stored state is up again."""
    # The sink's thread wakes only when flushed: both records reach it in one batch.
    tracker = make_tracker(WebhookChannel(receiver.url), flush_interval=60)
    record(tracker, Status.FAILED)
    record(tracker, Status.SUCCEEDED)
    settle(tracker)
    assert kinds(receiver) == ["failed", "recovered"]
    assert tracker.alerts is not None
    health = tracker.alerts.health("sync")
    assert health is not None
    assert (health.state, health.consecutive_failures) == (JobHealth.UP, 0)


def test_failures_a_success_came_between_are_not_in_a_row(
    make_tracker: MakeTracker, receiver: Receiver
) -> None:
    """With after_failures=2, a job that fails, succeeds and fails within one batch is not
    paged; a second failure in a row then is."""
    tracker = make_tracker(
        WebhookChannel(receiver.url), policy=AlertPolicy(after_failures=2), flush_interval=60
    )
    record(tracker, Status.FAILED, n=1)
    record(tracker, Status.SUCCEEDED, n=2)
    record(tracker, Status.FAILED, n=3)
    settle(tracker)
    assert receiver.requests == []
    assert tracker.alerts is not None
    health = tracker.alerts.health("sync")
    assert health is not None and health.consecutive_failures == 1
    record(tracker, Status.FAILED, n=4)
    settle(tracker)
    assert [body["summary"] for body in receiver.bodies()] == [
        "sync failed 2 times in a row: RuntimeError: attempt 4 failed"
    ]


def test_a_restart_sends_nothing_twice(make_tracker: MakeTracker, receiver: Receiver) -> None:
    """Closing mid-incident and starting a new tracker on the same database re-sends nothing."""
    first = make_tracker(WebhookChannel(receiver.url))
    for n in range(5):
        record(first, Status.FAILED, n=n)
    settle(first)
    assert kinds(receiver) == ["failed"]
    first.close()

    second = make_tracker(WebhookChannel(receiver.url))
    for n in range(5, 10):
        record(second, Status.FAILED, n=n)
    settle(second)
    assert kinds(receiver) == ["failed"]
    assert second.alerts is not None
    health = second.alerts.health("sync")
    assert health is not None and health.consecutive_failures == 10
    record(second, Status.SUCCEEDED)
    record(second, Status.SUCCEEDED)
    settle(second)
    assert kinds(receiver) == ["failed", "recovered"]


def test_two_replicas_alert_once(make_tracker: MakeTracker, receiver: Receiver) -> None:
    """Two trackers recording failures of the same job on one database send one alert."""
    a = make_tracker(WebhookChannel(receiver.url))
    b = make_tracker(WebhookChannel(receiver.url))
    for n in range(6):
        record(a if n % 2 else b, Status.FAILED, n=n)
        settle(a, b)
    assert kinds(receiver) == ["failed"]
    record(a, Status.SUCCEEDED)
    record(b, Status.SUCCEEDED)
    settle(a, b)
    assert kinds(receiver) == ["failed", "recovered"]


def test_a_replicas_success_recovers_a_job_another_replica_put_down(
    make_tracker: MakeTracker, receiver: Receiver
) -> None:
    """Replica A alerts on a failure; B's success a moment later (before B's periodic refresh of
    the stored states) was dropped as the success of a healthy job: no recovery, the job stayed
    down. B reads the stored state of a job it knows none of when it succeeds."""
    a = make_tracker(WebhookChannel(receiver.url))
    b = make_tracker(WebhookChannel(receiver.url))
    settle(a, b)  # both ready (states loaded: none yet)
    record(a, Status.FAILED, job="shared")
    settle(a)
    assert kinds(receiver) == ["failed"]
    record(b, Status.SUCCEEDED, job="shared")
    settle(b)
    assert kinds(receiver) == ["failed", "recovered"]


def _close_handing_back(tracker: Tracker) -> None:
    """Close ``tracker``; its one delivery, not sent, is handed back (``released``)."""
    tracker.close()
    assert tracker.alerts is not None
    (delivery,) = tracker.alerts.store.deliveries()
    tracker.alerts.engine.dispose()  # read after close: let go of the connection
    assert delivery["status"] == "released"


def test_alerts_pending_at_shutdown_go_out_after_a_restart(
    make_tracker: MakeTracker, make_receiver: Any
) -> None:
    """An alert still being retried when the tracker closes is sent, once, by the next tracker."""
    down, up = make_receiver(default=503), make_receiver()
    first = make_tracker(WebhookChannel(down.url, name="hook"), backoff=30.0, shutdown_timeout=0.2)
    record(first, Status.FAILED)
    assert first.flush(5)
    down.wait_for(1)
    _close_handing_back(first)

    second = make_tracker(WebhookChannel(up.url, name="hook"))
    up.wait_for(1)
    settle(second)
    assert [body["kind"] for body in up.bodies()] == ["failed"]
    assert second.alerts is not None
    wait_for(lambda: second.alerts.store.deliveries()[0]["status"] == "sent")  # type: ignore[union-attr]
    (delivery,) = second.alerts.store.deliveries()
    assert delivery["instance"] == second.instance


def test_an_alert_being_sent_at_shutdown_goes_out_after_a_restart(
    make_tracker: MakeTracker, make_receiver: Any
) -> None:
    """An alert whose receiver hangs while the tracker closes is handed back, and the next
    tracker sends it (with the same id, so a receiver that got it after all can drop it)."""
    hanging, up = make_receiver(default=HANG), make_receiver()
    first = make_tracker(WebhookChannel(hanging.url, name="hook", timeout=30), shutdown_timeout=0.2)
    record(first, Status.FAILED)
    assert first.flush(5)
    (request,) = hanging.wait_for(1)  # the attempt is in flight, and stays there
    _close_handing_back(first)

    second = make_tracker(WebhookChannel(up.url, name="hook"))
    (resent,) = up.wait_for(1)
    assert resent.json()["kind"] == "failed"
    assert resent.headers["X-Tracker-Alert-Id"] == request.headers["X-Tracker-Alert-Id"]
    assert second.alerts is not None
    wait_for(lambda: second.alerts.store.deliveries()[0]["status"] == "sent")  # type: ignore[union-attr]
    (delivery,) = second.alerts.store.deliveries()
    assert delivery["instance"] == second.instance


def test_deliveries_a_crashed_process_left_unfinished_are_taken_over(
    make_tracker: MakeTracker, receiver: Receiver, database_url: str
) -> None:
    """Alerts a process was sending when it died are sent by the next tracker once that
    process is known to be dead (or is this tracker's own earlier life, under the same
    instance id); those of a live process are left to it."""
    from sqlalchemy import insert

    from tracker.sinks.alerts.state import alert_deliveries, alert_flips
    from tracker.sinks.database import create_tracker_engine, upgrade
    from tracker.sinks.database.schema import instances

    now = datetime.now(UTC)
    before = now - timedelta(minutes=5)
    owners = {"crashed-job": "crashed-1", "busy-job": "busy-1", "own-job": "web-1"}
    engine = create_tracker_engine(database_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            for instance, stopped in (("crashed-1", before), ("busy-1", None)):
                conn.execute(
                    insert(instances).values(
                        instance=instance,
                        hostname="elsewhere",
                        pid=1,
                        started_at=before,
                        heartbeat_at=before if stopped else now,
                        stopped_at=stopped,
                    )
                )
            for n, (job, owner) in enumerate(owners.items()):
                alert = failed_alert(id=f"0193f0c2-0000-7000-8000-00000000000{n}", job_id=job)
                conn.execute(
                    insert(alert_flips).values(
                        id=alert.id,
                        job_id=job,
                        job_name=job,
                        created_at=before,
                        old_state="up",
                        new_state="down",
                        kind="failed",
                        severity="error",
                        payload=alert.to_payload(),
                        processed_at=before,
                        processed_by=owner,
                    )
                )
                conn.execute(
                    insert(alert_deliveries).values(
                        flip_id=alert.id,
                        channel="hook",
                        status="sending",
                        attempts=1,
                        instance=owner,
                        updated_at=before,
                    )
                )
    finally:
        engine.dispose()

    tracker = make_tracker(WebhookChannel(receiver.url, name="hook"), instance="web-1")
    receiver.wait_for(2)
    settle(tracker)
    assert sorted(body["job"]["id"] for body in receiver.bodies()) == ["crashed-job", "own-job"]
    assert tracker.alerts is not None
    wait_for(
        lambda: (
            sorted(d["status"] for d in tracker.alerts.store.deliveries())  # type: ignore[union-attr]
            == ["sending", "sent", "sent"]
        )
    )
    by_job = {d["flip_id"]: (d["status"], d["instance"]) for d in tracker.alerts.store.deliveries()}
    assert by_job["0193f0c2-0000-7000-8000-000000000001"] == ("sending", "busy-1")


def test_a_hanging_receiver_does_not_delay_the_jobs(
    make_tracker: MakeTracker, make_receiver: Any
) -> None:
    """With one receiver hanging, a job keeps every fire time and the other channel still alerts."""
    hanging, healthy = make_receiver(default=HANG), make_receiver()
    tracker = make_tracker(
        WebhookChannel(hanging.url, name="stuck", timeout=30),
        WebhookChannel(healthy.url, name="fine"),
        policy=AlertPolicy(after_failures=1, renotify_after=0.05),
        shutdown_timeout=0.2,
    )
    scheduler = BackgroundScheduler(timezone="UTC")
    tracker.instrument(scheduler)
    scheduler.add_job(
        always_failing_job,
        "interval",
        seconds=0.05,
        id="cadence",
        max_instances=3,
        misfire_grace_time=None,
        coalesce=False,  # a loaded machine may run a fire time late, never drop it
    )
    scheduler.start()
    try:
        hanging.wait_for(1)  # the stuck channel is now blocked on its first alert
        wait_for(lambda: len(healthy.requests) >= 3)  # reminders keep flowing elsewhere
        wait_for(lambda: tracker.flush(5) and len(tracker.executions("cadence", limit=100)) >= 20)
    finally:
        scheduler.shutdown(wait=True)
    assert tracker.flush(5)
    runs = sorted(tracker.executions("cadence", limit=1000), key=lambda e: e.scheduled_at)
    assert {e.status for e in runs} == {Status.FAILED}  # nothing missed, skipped or stuck
    gaps = {(b.scheduled_at - a.scheduled_at).total_seconds() for a, b in itertools.pairwise(runs)}
    assert gaps == {0.05}  # every fire time ran, in order
    assert len(hanging.requests) == 1


def test_outcomes_are_counted_in_metrics(make_tracker: MakeTracker, make_receiver: Any) -> None:
    """jobtracker_alerts_total{channel,outcome} counts sent and retried deliveries."""
    target = make_receiver([500], default=200)
    tracker = make_tracker(WebhookChannel(target.url), metrics=True, registry=CollectorRegistry())
    assert tracker.metrics is not None
    text = tracker.metrics.render().decode()
    assert 'jobtracker_alerts_total{channel="webhook",outcome="failed"} 0' in text
    record(tracker, Status.FAILED)
    settle(tracker)
    text = tracker.metrics.render().decode()
    assert 'jobtracker_alerts_total{channel="webhook",outcome="sent"} 1' in text
    assert 'jobtracker_alerts_total{channel="webhook",outcome="retried"} 1' in text
    assert tracker.alerts is not None
    assert tracker.alerts.counts[("webhook", "sent")] == 1


def test_policies_per_job_and_channel_routing(
    make_tracker: MakeTracker, make_receiver: Any
) -> None:
    """A job's own policy overrides the default, and may send to some channels only."""
    ops, dev = make_receiver(), make_receiver()
    tracker = make_tracker(WebhookChannel(ops.url, name="ops"), WebhookChannel(dev.url, name="dev"))
    assert tracker.alerts is not None
    tracker.alerts.config = AlertConfig(
        channels=list(tracker.alerts.channels.values()),
        job_policies={
            "noisy": AlertPolicy(after_failures=3, channels=["dev"]),
            "muted": AlertPolicy(enabled=False),
        },
    )
    for n in range(2):
        record(tracker, Status.FAILED, job="noisy", n=n)
        record(tracker, Status.FAILED, job="muted", n=n)
    settle(tracker)
    assert ops.requests == [] and dev.requests == []
    record(tracker, Status.FAILED, job="noisy", n=3)
    settle(tracker)
    assert ops.requests == []
    assert [b["consecutive_failures"] for b in dev.bodies()] == [3]


def test_tracker_reads_alert_channels_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str, receiver: Receiver
) -> None:
    """TRACKER_ALERT_WEBHOOK_URL alone turns alerts on; with a secret, the webhook is signed."""
    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK_SECRET", "k")
    tracker = Tracker(database_url, settings=TrackerSettings(flush_interval=0.02), metrics=False)
    try:
        assert tracker.alerts is not None
        assert sorted(tracker.alerts.channels) == ["log", "webhook"]
        record(tracker, Status.FAILED)
        settle(tracker)
        (request,) = receiver.wait_for(1)
        assert request.headers["X-Tracker-Signature"].startswith("sha256=")
    finally:
        tracker.close()


def test_a_bad_channel_stops_the_tracker_at_start(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """A misconfigured channel raises ConfigurationError before any thread starts."""
    monkeypatch.setenv("TRACKER_ALERT_SLACK_URL", "hooks.slack.com/services/T0/B0/x")
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(ConfigurationError, match=r"Slack channel 'slack'.*https://"):
        Tracker(database_url)
    started = [t.name for t in threading.enumerate() if t.ident not in before]
    assert not [name for name in started if name.startswith("tracker")]
    monkeypatch.delenv("TRACKER_ALERT_SLACK_URL")
    tracker = Tracker(database_url, metrics=False)
    try:
        assert tracker.alerts is None  # nothing configured: alerts stay off
    finally:
        tracker.close()


@pytest.mark.parametrize(
    ("options", "where"),
    [
        ({"policy": AlertPolicy(channels=["emial"])}, "AlertConfig.policy"),
        (
            {"job_policies": {"nightly": AlertPolicy(channels=["webhook", "emial"])}},
            "AlertConfig.job_policies['nightly']",
        ),
    ],
)
def test_a_policy_naming_an_unknown_channel_is_refused(
    options: dict[str, Any], where: str, receiver: Receiver
) -> None:
    """A misspelt channel name in a policy raises ConfigurationError naming it and the
    channels there are (its alerts would otherwise go nowhere)."""
    with pytest.raises(ConfigurationError) as raised:
        AlertConfig(channels=[WebhookChannel(receiver.url), LogChannel()], **options)
    assert str(raised.value) == (
        f"{where} names alert channel 'emial', which is not configured "
        "(the channels are: 'webhook', 'log')"
    )


def test_a_policy_naming_a_channel_the_environment_lacks_stops_the_tracker_at_start(
    monkeypatch: pytest.MonkeyPatch, database_url: str, receiver: Receiver
) -> None:
    """With the channels from the environment, a policy's unknown channel is refused when the
    tracker starts, before any thread does; with the channel configured, it alerts there."""
    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK_URL", receiver.url)
    config = AlertConfig(policy=AlertPolicy(channels=["email"]))
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(ConfigurationError, match=r"channel 'email'.*'webhook', 'log'"):
        Tracker(database_url, alerts=config, metrics=False)
    started = [t.name for t in threading.enumerate() if t.ident not in before]
    assert not [name for name in started if name.startswith("tracker")]

    config = AlertConfig(policy=AlertPolicy(channels=["webhook"]))
    tracker = Tracker(
        database_url, settings=TrackerSettings(flush_interval=0.02), alerts=config, metrics=False
    )
    try:
        record(tracker, Status.FAILED)
        settle(tracker)
        assert kinds(receiver) == ["failed"]
    finally:
        tracker.close()


def test_text_the_database_cannot_hold_alerts_like_any_other(
    make_tracker: MakeTracker, receiver: Receiver
) -> None:
    """A failure whose message holds a NUL character, of a job whose id is past 255 characters
    (neither of which PostgreSQL's text holds), still alerts; and the jobs after it too."""
    tracker = make_tracker(WebhookChannel(receiver.url))
    long_id = "nightly-" + "x" * 300
    record(tracker, Status.FAILED, job=long_id, error_message="ledger\x00 7 is locked")
    record(tracker, Status.FAILED, job="sync")
    settle(tracker)
    by_job = {body["job"]["id"][:20]: body for body in receiver.bodies()}
    assert set(by_job) == {long_id[:20], "sync"}
    assert by_job["sync"]["kind"] == "failed"
    assert by_job[long_id[:20]]["kind"] == "failed"


def test_a_delivery_error_the_database_cannot_hold_is_still_recorded(database_url: str) -> None:
    """A channel's error text with a NUL or a lone surrogate (an SMTP server's reply, say) is
    recorded on the delivery (each as U+FFFD), not lost with the delivery's outcome."""
    from sqlalchemy import insert

    from tracker.sinks.alerts.state import FAILED, AlertStore, alert_flips
    from tracker.sinks.database import create_tracker_engine, upgrade

    engine = create_tracker_engine(database_url)
    try:
        upgrade(engine)
        store = AlertStore(engine, "web-1")
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(
                insert(alert_flips).values(
                    id="flip-1",
                    job_id="sync",
                    job_name="sync",
                    created_at=now,
                    old_state="up",
                    new_state="down",
                    kind="failed",
                    severity="error",
                    payload={},
                )
            )
        assert store.claim("flip-1", ["email"], now)
        store.set_delivery(
            "flip-1", "email", FAILED, attempts=3, error="550 mailbox\x00 caf\udce9 unavailable"
        )
        (delivery,) = store.deliveries("flip-1")
    finally:
        engine.dispose()
    assert (delivery["status"], delivery["attempts"]) == (FAILED, 3)
    assert delivery["error"] == "550 mailbox\ufffd caf\ufffd unavailable"
