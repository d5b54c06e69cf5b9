"""Email over SMTP: STARTTLS and login when configured, or SMTPS (implicit TLS)."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ...._exceptions import ConfigurationError
from ..delivery import DeliveryError
from ..model import Alert
from .base import check_timeout
from .text import fields, headline


def render(alert: Alert, sender: str, recipients: list[str], prefix: str) -> EmailMessage:
    """The email for ``alert``: a subject with the severity and a plain-text body."""
    msg = EmailMessage()
    subject = f"{prefix} {alert.severity.value.upper()}: {alert.title}".strip()
    msg["Subject"] = subject.replace("\n", " ")[:250]
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(idstring=alert.id.replace("-", ""))
    msg["X-Tracker-Alert-Id"] = alert.id
    width = max(len(k) for k, _ in fields(alert))
    lines = [headline(alert), "", alert.title, ""]
    lines += [f"{k + ':':<{width + 1}} {v}" for k, v in fields(alert) if k != "Error"]
    error = dict(fields(alert)).get("Error")
    if alert.run is not None and alert.run.error_message and error:
        lines += ["", "Error:", f"  {alert.run.error_type or ''}".rstrip()]
        lines += [f"  {line}" for line in alert.run.error_message.splitlines()[:40]]
    lines += ["", f"Severity: {alert.severity.value} · alert id {alert.id}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _reply_text(reply: object) -> str:
    """An SMTP server's reply as text (smtplib gives it as bytes)."""
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _smtp_error(exc: Exception, where: str) -> DeliveryError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        transient = bool(codes) and all(400 <= c < 500 for c in codes)
        return DeliveryError(
            f"{where} refused the recipients: {exc.recipients}", transient=transient
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        message = _reply_text(exc.smtp_error)
        return DeliveryError(
            f"{where} answered {exc.smtp_code} {message}", transient=400 <= exc.smtp_code < 500
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryError(f"{where}: {exc}", transient=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(f"TLS error with {where}: {exc}", transient=False)
    if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
        return DeliveryError(f"{type(exc).__name__} talking to {where}: {exc}", transient=True)
    return DeliveryError(f"{type(exc).__name__} from {where}: {exc}", transient=False)


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    """``addr (550 reason), ...`` of the recipients a server refused."""
    return ", ".join(
        f"{address} ({code} {_reply_text(reply)})" for address, (code, reply) in refused.items()
    )


class EmailChannel:
    """Sends each alert as a plain-text email.

    ::

        EmailChannel("smtp.example.com", port=587, starttls=True,
                     username="alerts", password="...",
                     sender="tracker@example.com", recipients=["ops@example.com"])

    ``ssl=True`` uses implicit TLS (SMTPS, port 465). ``ssl_context`` defaults to the
    system's trusted certificates.
    """

    def __init__(
        self,
        host: str | None,
        *,
        sender: str | None,
        recipients: Iterable[str] | str,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        subject_prefix: str = "[tracker]",
        name: str = "email",
    ) -> None:
        what = f"email channel {name!r}"
        self.name = name
        if not host or not host.strip():
            raise ConfigurationError(
                f"{what}: no SMTP host (pass host=, or set TRACKER_ALERT_SMTP_HOST)"
            )
        self.host = host.strip()
        if isinstance(recipients, str):
            recipients = [r for r in recipients.split(",")]
        self.recipients = [r.strip() for r in recipients if r and r.strip()]
        if not self.recipients:
            raise ConfigurationError(
                f"{what}: no recipients (pass recipients=, or set TRACKER_ALERT_EMAIL_TO)"
            )
        for address in [*self.recipients, sender or ""]:
            if "@" not in address:
                raise ConfigurationError(
                    f"{what}: {address!r} is not an email address"
                    + (" (set sender=, or TRACKER_ALERT_EMAIL_FROM)" if not address else "")
                )
        self.sender = str(sender)
        if starttls and ssl:
            raise ConfigurationError(
                f"{what}: starttls and ssl exclude each other (STARTTLS upgrades a plain "
                "connection, usually on port 587; ssl is implicit TLS, usually on port 465)"
            )
        self.port = port if port is not None else (465 if ssl else 587 if starttls else 25)
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"{what}: invalid SMTP port {self.port}")
        if password and not username:
            raise ConfigurationError(f"{what}: a password is set but no username")
        self.username = username
        self.password = password or ""
        self.starttls = starttls
        self.ssl = ssl
        self.ssl_context = ssl_context
        self.timeout = check_timeout(timeout, what)
        self.subject_prefix = subject_prefix

    def send(self, alert: Alert) -> None:
        msg = render(alert, self.sender, self.recipients, self.subject_prefix)
        where = f"SMTP server {self.host}:{self.port}"
        context = self.ssl_context or _default_context()
        try:
            smtp: smtplib.SMTP
            if self.ssl:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, self.password)
                refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
        except (smtplib.SMTPException, OSError) as exc:
            raise _smtp_error(exc, where) from None
        if refused:
            # smtplib raises only when every recipient is refused: the others got it. Not
            # retried (they would get it again); a failure naming who did not.
            delivered = [r for r in self.recipients if r not in refused]
            raise DeliveryError(
                f"{where} refused {_refusals(refused)}; delivered to {', '.join(delivered)}",
                transient=False,
            )

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"EmailChannel({self.host!r}, port={self.port}, name={self.name!r})"


def _default_context() -> ssl.SSLContext:
    return ssl.create_default_context()
