"""The notifier seam: `async send(message)`; failures say whether trying again can help."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class NotifyError(Exception):
    """A delivery failed. Messages must never carry secrets (tokens, passwords): redact first."""


class RetryableNotifyError(NotifyError):
    """Temporary: connection refused, timeout, HTTP 5xx / 429, SMTP 4xx. The pipeline retries with backoff.

    `retry_after_s`: the receiver said when to come back (HTTP `Retry-After`); the next attempt waits at least that.
    """

    def __init__(self, *args: object, retry_after_s: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after_s = retry_after_s


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


@runtime_checkable
class BatchNotifier(Notifier, Protocol):
    """A notifier whose channel takes several messages in one request (LINE push: up to 5).

    `send_batch` delivers all of `messages` (at most `max_batch`) or raises; `batch_id` stays the same while the
    same batch is retried, so the channel can refuse a second copy of a request it already accepted."""

    max_batch: int

    async def send_batch(self, messages: list[NotifyMessage], batch_id: str) -> None: ...
