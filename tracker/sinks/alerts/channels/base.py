"""What channels share: URL checks, and an HTTP POST that tells transient failures apart.

HTTP goes through the standard library (``urllib``): alerts are rare, so connection
pooling buys nothing, and every installation of tracker can alert without an extra
dependency. Timeouts apply to connecting and to each read, so a receiver that hangs
costs at most ``timeout`` seconds per attempt — on the channel's own thread.
"""

from __future__ import annotations

import email.utils
import http.client
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

from ...._exceptions import ConfigurationError
from ..delivery import DeliveryError

USER_AGENT = "tracker-alerts/1"
_MAX_BODY = 64 * 1024


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: webhook URLs carry their secret in the path."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:  # no scheme: "hooks.slack.com/services/T0/B0/x"
        head = url.split("/")[:2]
        return "/".join(head) + "/…" if url.count("/") > 1 else url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…" if parts.path not in ("", "/") else url


def check_url(url: object, what: str) -> str:
    """``url`` if it is an absolute http(s) URL, else a :class:`ConfigurationError`."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"{what}: no URL given")
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigurationError(f"{what}: invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(
            f"{what}: URL {redact_url(url)!r} must start with https:// (or http://)"
        )
    if not parts.hostname:
        raise ConfigurationError(f"{what}: URL {url!r} has no host")
    return url


MAX_TIMEOUT_S = 3600.0
"""The longest a channel may wait for its receiver (sockets cannot wait forever: a timeout
past what the platform's clock holds fails every delivery)."""


def check_timeout(timeout: float, what: str) -> float:
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise ConfigurationError(
            f"{what}: timeout must be above 0 and at most {MAX_TIMEOUT_S:g} seconds, got {timeout}"
        )
    return float(timeout)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirected POST loses its body: report the 3xx instead


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def post(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """POST ``body``; the status and (the start of) the response body.

    Raises :class:`DeliveryError`: transient for timeouts, refused or reset
    connections, 5xx, 408 and 429 (with ``Retry-After``); permanent for other 4xx,
    redirects and TLS certificate errors.
    """
    shown = redact_url(url)
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("User-Agent", USER_AGENT)
    for key, value in headers.items():
        request.add_header(key, value)
    opener = urllib.request.build_opener(
        _NoRedirect(), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), response.read(_MAX_BODY)
    except urllib.error.HTTPError as exc:
        status = exc.code
        try:
            text = exc.read(500).decode("utf-8", "replace").strip()
        except Exception:
            text = ""
        transient = status >= 500 or status in (408, 425, 429)
        message = f"HTTP {status} from {shown}" + (f": {text}" if text else "")
        if 300 <= status < 400:
            message += f" (redirect to {exc.headers.get('Location')!r}: configure the final URL)"
        raise DeliveryError(
            message, transient=transient, retry_after=_retry_after(exc.headers.get("Retry-After"))
        ) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise DeliveryError(f"TLS error with {shown}: {reason}", transient=False) from None
        raise DeliveryError(f"cannot reach {shown}: {reason}", transient=True) from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise DeliveryError(
            f"{type(exc).__name__} talking to {shown}: {exc}", transient=True
        ) from None


def first_line(text: str | None, limit: int = 300) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_summary(error_type: str | None, error_message: str | None, limit: int = 300) -> str:
    """``ValueError: boom`` (short type name, first line of the message)."""
    short = (error_type or "").rsplit(".", 1)[-1]
    message = first_line(error_message, limit)
    if short and message:
        return f"{short}: {message}"
    return short or message
