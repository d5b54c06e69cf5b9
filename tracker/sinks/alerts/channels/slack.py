"""Slack incoming webhooks: a short, readable message per alert."""

from __future__ import annotations

import json
import ssl
from typing import Any

from ..delivery import DeliveryError
from ..model import Alert
from .base import check_timeout, check_url, post, redact_url
from .text import ICONS, fields, headline

_MAX_FIELD = 1_900  # Slack caps a section's text at 3,000 characters


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(alert: Alert) -> dict[str, Any]:
    """The Slack message for ``alert`` (``text`` for notifications, ``blocks`` to read)."""
    icon = ICONS[alert.severity]
    rows = fields(alert)
    short = [(k, v) for k, v in rows if k not in ("Error", "Detail", "Run", "Instance")]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": f"{icon} {headline(alert)}"[:150],
                "emoji": True,
            },
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(alert.title)[:_MAX_FIELD]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{k}*\n{_escape(v)[:_MAX_FIELD]}"}
                for k, v in short[:10]
            ],
        },
    ]
    for key in ("Error", "Detail"):
        value = dict(rows).get(key)
        if value:
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": f"*{key}*\n```{_escape(value)[:_MAX_FIELD]}```",
                    },
                }
            )
    context = [f"severity *{alert.severity.value}*"]
    if alert.run is not None:
        context.append(f"run `{alert.run.run_id}`")
    if alert.instance:
        context.append(f"on `{_escape(alert.instance)}`")
    context.append(f"alert `{alert.id}`")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
    )
    return {"text": f"{icon} {alert.title}", "blocks": blocks}


class SlackChannel:
    """Posts to a Slack incoming webhook (``https://hooks.slack.com/services/...``)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "slack",
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.url = check_url(url, f"Slack channel {name!r}")
        self.timeout = check_timeout(timeout, f"Slack channel {name!r}")
        self.ssl_context = ssl_context

    def send(self, alert: Alert) -> None:
        body = json.dumps(message(alert), ensure_ascii=False).encode("utf-8")
        status, _ = post(
            self.url,
            body,
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=self.timeout,
            context=self.ssl_context,
        )
        if status >= 300:
            raise DeliveryError(f"HTTP {status} from {redact_url(self.url)}", transient=False)

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"SlackChannel({redact_url(self.url)!r}, name={self.name!r})"
