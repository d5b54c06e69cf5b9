"""Each channel against a real receiver on loopback: Slack, webhook, SMTP, Sentry, the log."""

# ruff: noqa: F811 - pytest fixtures imported from test_alert_receivers are parameters here

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from email import message_from_bytes
from typing import Any

import pytest
from test_alert_receivers import (  # noqa: F401 - fixtures
    HANG,
    Certificate,
    Receiver,
    SmtpServer,
    certificate,
    make_receiver,
    receiver,
)

from tracker import (
    Alert,
    AlertConfig,
    AlertKind,
    AlertSettings,
    ConfigurationError,
    EmailChannel,
    LogChannel,
    SentryChannel,
    Severity,
    SlackChannel,
    WebhookChannel,
    verify_signature,
)
from tracker.sinks.alerts import PAYLOAD_VERSION, DeliveryError, JobHealth, RunSummary

AT = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)


def failed_alert(**changes: Any) -> Alert:
    options: dict[str, Any] = {
        "id": "0193f0c2-0000-7000-8000-000000000001",
        "kind": AlertKind.FAILED,
        "severity": Severity.ERROR,
        "job_id": "sync-invoices",
        "job_name": "sync_invoices",
        "state": JobHealth.DOWN,
        "previous_state": JobHealth.UP,
        "at": AT,
        "summary": "sync_invoices failed 3 times in a row: ValueError: invoice 42 <bad> & late",
        "down_since": AT,
        "consecutive_failures": 3,
        "run": RunSummary(
            run_id="0193f0c1-ffff-7000-8000-00000000abcd",
            status="failed",
            scheduled_at=AT,
            started_at=AT,
            finished_at=AT,
            duration_s=1.25,
            error_type="ValueError",
            error_message="invoice 42 <bad> & late\nsecond line",
        ),
        "instance": "web-1:42/abcdef",
        "tags": {"team": "billing"},
    }
    options.update(changes)
    return Alert(**options)


def test_slack_message_is_readable(receiver: Receiver) -> None:
    """The Slack message names the job, status, error, time, failures in a row and run id."""
    SlackChannel(receiver.url).send(failed_alert())
    (request,) = receiver.wait_for(1)
    body = request.json()
    assert request.headers["Content-Type"].startswith("application/json")
    assert "sync_invoices failed 3 times in a row" in body["text"]
    text = str(body["blocks"])
    for expected in (
        "sync_invoices",
        "failed",
        "2026-11-23 12:00:05 UTC",
        "Failures in a row",
        "*Failures in a row*\\n3",
        "0193f0c1-ffff-7000-8000-00000000abcd",
        "ValueError: invoice 42 &lt;bad&gt; &amp; late",
    ):
        assert expected in text, expected


def test_webhook_payload_is_versioned_and_signed(receiver: Receiver) -> None:
    """The webhook posts the versioned payload, with an id header and an HMAC-SHA256 signature."""
    WebhookChannel(receiver.url, secret="s3cret", headers={"X-Team": "ops"}).send(failed_alert())
    (request,) = receiver.wait_for(1)
    payload = request.json()
    assert payload["version"] == PAYLOAD_VERSION == 1
    assert payload["kind"] == "failed" and payload["severity"] == "error"
    assert payload["state"] == "down" and payload["previous_state"] == "up"
    assert payload["job"] == {
        "id": "sync-invoices",
        "name": "sync_invoices",
        "tags": {"team": "billing"},
    }
    assert payload["run"]["id"] == "0193f0c1-ffff-7000-8000-00000000abcd"
    assert payload["run"]["error_type"] == "ValueError"
    assert payload["consecutive_failures"] == 3
    assert payload["at"] == "2026-11-23T12:00:05+00:00"
    assert request.headers["X-Tracker-Alert-Id"] == payload["id"]
    assert request.headers["X-Team"] == "ops"
    signature = request.headers["X-Tracker-Signature"]
    assert signature.startswith("sha256=")
    assert verify_signature(request.body, signature, "s3cret")
    assert not verify_signature(request.body, signature, "other")
    assert not verify_signature(request.body + b" ", signature, "s3cret")
    assert Alert.from_payload(payload) == failed_alert(tags=payload["job"]["tags"])


def test_webhook_without_secret_is_unsigned(receiver: Receiver) -> None:
    """Without a secret there is no signature header."""
    WebhookChannel(receiver.url).send(failed_alert())
    (request,) = receiver.wait_for(1)
    assert "X-Tracker-Signature" not in request.headers


@pytest.mark.parametrize(
    ("status", "transient"), [(500, True), (503, True), (429, True), (404, False), (400, False)]
)
def test_http_errors_are_classified(make_receiver: Any, status: int, transient: bool) -> None:
    """5xx and 429 are transient (retried); other 4xx are permanent."""
    target = make_receiver(default=status)
    with pytest.raises(DeliveryError) as caught:
        WebhookChannel(target.url).send(failed_alert())
    assert caught.value.transient is transient
    assert f"HTTP {status}" in str(caught.value)
    assert "secret-token" not in str(caught.value)  # webhook URLs carry secrets


def test_refused_connection_and_hang_are_transient(make_receiver: Any) -> None:
    """A refused connection and a receiver that never answers are transient failures."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryError) as refused:
        WebhookChannel(f"http://127.0.0.1:{port}/x").send(failed_alert())
    assert refused.value.transient
    hanging = make_receiver(default=HANG)
    with pytest.raises(DeliveryError) as hung:
        WebhookChannel(hanging.url, timeout=0.2).send(failed_alert())
    assert hung.value.transient


def test_email_over_smtp() -> None:
    """The email channel delivers a plain-text message to a real SMTP server."""
    server = SmtpServer()
    try:
        channel = EmailChannel(
            "127.0.0.1",
            port=server.port,
            sender="tracker@example.com",
            recipients="ops@example.com, dev@example.com",
        )
        channel.send(failed_alert())
        (envelope,) = server.wait_for(1)
    finally:
        server.close()
    assert envelope.rcpt_tos == ["ops@example.com", "dev@example.com"]
    message = message_from_bytes(envelope.content)
    assert message["Subject"].startswith("[tracker] ERROR: sync_invoices failed 3 times")
    body = message.get_payload(decode=True).decode()
    assert "Failures in a row: 3" in body
    assert "0193f0c1-ffff-7000-8000-00000000abcd" in body
    assert "invoice 42 <bad> & late" in body


def test_an_email_some_recipients_refused_is_a_failure_naming_them() -> None:
    """A server refusing one recipient of two: smtplib raises only when all are refused, and the
    alert counted as sent though on-call never got it. It is a (not retried: the other one got
    it) failure naming the refused address and the delivered one."""
    server = SmtpServer(refuse=frozenset({"oncall@example.com"}))
    try:
        channel = EmailChannel(
            "127.0.0.1",
            port=server.port,
            sender="tracker@example.com",
            recipients=["ops@example.com", "oncall@example.com"],
        )
        with pytest.raises(DeliveryError) as refused:
            channel.send(failed_alert())
        (envelope,) = server.wait_for(1)
    finally:
        server.close()
    assert envelope.rcpt_tos == ["ops@example.com"]
    assert not refused.value.transient
    assert "refused oncall@example.com (550 5.1.1 mailbox unavailable)" in str(refused.value)
    assert "delivered to ops@example.com" in str(refused.value)


def test_email_with_starttls_and_login(certificate: Certificate) -> None:
    """With starttls=True and a username, the channel upgrades to TLS and logs in."""
    server = SmtpServer(tls_context=certificate.server_context(), login=("alerts", "pw"))
    try:
        channel = EmailChannel(
            "127.0.0.1",
            port=server.port,
            sender="tracker@example.com",
            recipients=["ops@example.com"],
            starttls=True,
            username="alerts",
            password="pw",
            ssl_context=certificate.client_context(),
        )
        channel.send(failed_alert())
        server.wait_for(1)
        assert server.logins == ["alerts"]
        wrong = EmailChannel(
            "127.0.0.1",
            port=server.port,
            sender="tracker@example.com",
            recipients=["ops@example.com"],
            starttls=True,
            username="alerts",
            password="no",
            ssl_context=certificate.client_context(),
        )
        with pytest.raises(DeliveryError) as caught:
            wrong.send(failed_alert())
        assert not caught.value.transient  # 535: a wrong password is not retried
    finally:
        server.close()


def test_sentry_channel_sends_through_the_sdk(receiver: Receiver) -> None:
    """With sentry-sdk initialised, an alert becomes a Sentry message grouped by job and kind."""
    import sentry_sdk

    channel = SentryChannel()
    assert not channel.active  # not initialised: inactive, alerts are skipped
    sentry_sdk.init(dsn=f"http://public@127.0.0.1:{receiver.port}/1", default_integrations=False)
    try:
        assert channel.active
        channel.send(failed_alert())
        sentry_sdk.flush(5)
        requests = receiver.wait_for(1)
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)
    envelope = b"\n".join(r.body for r in requests)
    assert b"sync_invoices failed 3 times in a row" in envelope
    assert b'"alert_kind":"failed"' in envelope.replace(b" ", b"")
    assert b"tracker-alert" in envelope
    assert not channel.active


def test_log_channel_logs_at_the_alert_severity(caplog: pytest.LogCaptureFixture) -> None:
    """The log channel writes one record at the severity's level, with the payload attached."""
    with caplog.at_level(logging.INFO, logger="tracker.alerts"):
        LogChannel().send(failed_alert())
        LogChannel().send(failed_alert(severity=Severity.WARNING, kind=AlertKind.MISSED))
    error, warning = caplog.records
    assert error.levelno == logging.ERROR and "sync_invoices failed 3 times" in error.getMessage()
    assert warning.levelno == logging.WARNING
    assert error.alert["job"]["id"] == "sync-invoices"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SlackChannel("hooks.slack.com/services/x"), "must start with https://"),
        (lambda: SlackChannel(""), "no URL given"),
        (lambda: WebhookChannel("https://"), "has no host"),
        (lambda: WebhookChannel("http://host:99999/x"), "invalid URL"),
        (
            lambda: SlackChannel("hooks.slack.com/services/T0/B0/secret"),
            "URL 'hooks.slack.com/services/…' must start with https://",
        ),
        (lambda: WebhookChannel("https://h/x", secret=""), "signing secret is empty"),
        (  # a socket cannot wait that long: every delivery failed, and none was retried
            lambda: WebhookChannel("https://h/x", timeout=float("inf")),
            "timeout must be above 0 and at most 3600 seconds, got inf",
        ),
        (lambda: EmailChannel(None, sender="a@b.c", recipients="d@e.f"), "no SMTP host"),
        (lambda: EmailChannel("smtp", sender="a@b.c", recipients=""), "no recipients"),
        (lambda: EmailChannel("smtp", sender=None, recipients="d@e.f"), "is not an email address"),
        (
            lambda: EmailChannel(
                "smtp", sender="a@b.c", recipients="d@e.f", starttls=True, ssl=True
            ),
            "exclude each other",
        ),
        (
            lambda: AlertConfig(channels=[LogChannel(), LogChannel()]),
            "two alert channels are named",
        ),
        (lambda: AlertConfig(channels=["https://x"]), "is not an alert channel"),  # type: ignore[list-item]
    ],
)
def test_misconfigured_channels_fail_at_start(make: Any, message: str) -> None:
    """A bad URL, a missing SMTP host or duplicate names raise ConfigurationError at once."""
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_channels_from_the_environment(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    """TRACKER_ALERT_* variables configure the channels and the policy."""
    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK_SECRET", "k")
    monkeypatch.setenv("TRACKER_ALERT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TRACKER_ALERT_EMAIL_FROM", "t@example.com")
    monkeypatch.setenv("TRACKER_ALERT_EMAIL_TO", "a@example.com,b@example.com")
    monkeypatch.setenv("TRACKER_ALERT_AFTER_FAILURES", "3")
    settings = AlertSettings()
    assert settings.active
    config = AlertConfig.from_settings(settings)
    assert config.policy.after_failures == 3
    names = [c.name for c in config.resolved_channels()]
    assert names == ["webhook", "email", "log"]
    email = next(c for c in config.resolved_channels() if isinstance(c, EmailChannel))
    assert email.recipients == ["a@example.com", "b@example.com"] and email.port == 25
    monkeypatch.setenv("TRACKER_ALERT_SLACK_URL", "not a url")
    with pytest.raises(ConfigurationError, match="Slack channel 'slack'"):
        AlertConfig.from_settings()


def test_email_without_host_in_environment_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recipients without an SMTP host name the missing variable."""
    monkeypatch.setenv("TRACKER_ALERT_EMAIL_TO", "a@example.com")
    with pytest.raises(ConfigurationError, match="TRACKER_ALERT_SMTP_HOST"):
        AlertConfig.from_settings()


def test_payload_round_trips() -> None:
    """An alert rebuilt from its payload is the same alert (flips store the payload)."""
    alert = failed_alert(
        reminder=True, cause=AlertKind.FAILED, failure_ratio=0.5, detail="more", max_runtime=0.3
    )
    assert Alert.from_payload(alert.to_payload()) == alert
    assert alert.title.startswith("Still down: ")


def test_a_webhook_secret_without_its_url_is_an_error_not_alerts_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``TRACKER_ALERT_WEBHOOK_SECRET`` set and the URL variable misspelt: the tracker refuses
    to start, naming the missing variable (alerts used to be silently off)."""
    from tracker import Tracker

    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK_SECRET", "k")
    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK_ULR", "https://example.com/hook")
    with pytest.raises(ConfigurationError, match="TRACKER_ALERT_WEBHOOK_URL is not"):
        Tracker("sqlite:///:memory:")
