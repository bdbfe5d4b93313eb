"""Typed errors of the collectors, each carrying the context an operator needs (never a secret)."""

from __future__ import annotations

from core.errors import NakhonError


class RejectedMessage(NakhonError):
    """A message that cannot become a reading; it is quarantined under `reason` (a short, stable code)
    with `detail` explaining what was wrong (naming the field where there is one)."""

    def __init__(self, reason: str, detail: str, *, device_id: str | None = None, feed: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.device_id = device_id
        self.feed = feed


class SinkError(NakhonError):
    """A sink could not store a batch."""


class SinkUnavailable(SinkError):
    """Retryable: the store is down, overloaded (5xx, 429) or timed out. The batch may be tried again."""


class SinkRejected(SinkError):
    """Permanent: the store refused the batch (4xx). `bad_indexes`, when known, names the offending points."""

    def __init__(self, message: str, bad_indexes: list[int] | None = None, *, rest_stored: bool = False) -> None:
        super().__init__(message)
        self.bad_indexes = bad_indexes or []
        # True when the store says it kept every other point (InfluxDB's partial write): no need to re-write them
        self.rest_stored = rest_stored


class SinkBodyTooLarge(SinkError):
    """The store refused the request body as too large (HTTP 413): the batch must shrink; no point is at fault."""


class SpoolFull(SinkError):
    """The local disk spool reached its size limit: nothing more can be accepted until the sink returns."""
