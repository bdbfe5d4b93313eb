"""The notifier seam: `async send(message)`; failures say whether trying again can help."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class NotifyError(Exception):
    """A delivery failed. Messages must never carry secrets (tokens, passwords): redact first."""


class RetryableNotifyError(NotifyError):
    """Temporary: connection refused, timeout, HTTP 5xx / 429, SMTP 4xx. The pipeline retries with backoff."""


class PermanentNotifyError(NotifyError):
    """Will not succeed by retrying: bad URL or credentials, HTTP 4xx, SMTP 5xx, rejected recipient."""


@dataclass(slots=True)
class NotifyMessage:
    receiver: str
    title: str
    body: str
    severity: str  # the highest severity among the alerts
    kind: str  # firing | resolved | reminder | escalation
    alert_ids: list[str]
    group_key: str = ""
    message_id: str = ""
    payload: dict[str, Any] = field(default_factory=dict)  # structured copy, for webhooks


class Notifier(Protocol):
    name: str

    async def send(self, message: NotifyMessage) -> None:
        """Deliver or raise RetryableNotifyError / PermanentNotifyError."""
