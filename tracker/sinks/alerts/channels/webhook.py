"""A generic JSON webhook: the versioned payload, optionally signed with HMAC-SHA256.

Headers sent with every request::

    Content-Type: application/json
    X-Tracker-Alert-Id: <alert id>          (the same on retries: drop duplicates with it)
    X-Tracker-Signature: sha256=<hex>       (with a secret: HMAC-SHA256 of the raw body)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from collections.abc import Mapping

from ...._exceptions import ConfigurationError
from ..delivery import DeliveryError
from ..model import Alert
from .base import check_timeout, check_url, post, redact_url

SIGNATURE_HEADER = "X-Tracker-Signature"
ID_HEADER = "X-Tracker-Alert-Id"


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(body: bytes, secret: str | bytes) -> str:
    """The ``X-Tracker-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str | bytes) -> bool:
    """Whether ``header`` (``X-Tracker-Signature``) is the signature of ``body`` (constant time)."""
    if not header:
        return False
    return hmac.compare_digest(sign(body, secret), header.strip())


def encode(alert: Alert) -> bytes:
    """The request body: the alert's payload as compact UTF-8 JSON."""
    return json.dumps(alert.to_payload(), separators=(",", ":"), ensure_ascii=False).encode()


class WebhookChannel:
    """POSTs each alert's JSON payload (see ``docs/alerts.md``) to ``url``."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        name: str = "webhook",
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.url = check_url(url, f"webhook channel {name!r}")
        if secret is not None and not secret:
            raise ConfigurationError(f"webhook channel {name!r}: the signing secret is empty")
        self.secret = secret
        self.headers = dict(headers or {})
        self.timeout = check_timeout(timeout, f"webhook channel {name!r}")
        self.ssl_context = ssl_context

    def send(self, alert: Alert) -> None:
        body = encode(alert)
        headers = {"Content-Type": "application/json", ID_HEADER: alert.id, **self.headers}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self.secret)
        status, _ = post(
            self.url, body, headers=headers, timeout=self.timeout, context=self.ssl_context
        )
        if status >= 300:
            raise DeliveryError(f"HTTP {status} from {redact_url(self.url)}", transient=False)

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"WebhookChannel({redact_url(self.url)!r}, name={self.name!r})"
