"""The derived-values seam: per-feed enrichers add derived fields and tags to a validated reading.

An enricher may keep per-device state (rolling averages, the last register value); that state is exported
as plain JSON-able data so it survives a restart.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from core.model import DeviceInfo, Reading

#: Restored state stamped further ahead of the wall clock than this is dropped: it can only come from a
#: reading with a wrong clock (saved before the pipeline's bad_time check existed) and would block the device.
STATE_FUTURE_TOLERANCE_NS = 24 * 3600 * 1_000_000_000


def restorable(time_ns: int | None, now_ns: int | None = None) -> bool:
    """Whether saved per-device state at `time_ns` may be restored (not in the future beyond a day)."""
    if time_ns is None:
        return True
    return time_ns <= (time.time_ns() if now_ns is None else now_ns) + STATE_FUTURE_TOLERANCE_NS


class Enricher(Protocol):
    feed: str

    def enrich(self, reading: Reading, device: DeviceInfo) -> None:
        """Add derived fields (and tags) to `reading` in place. Never raises for ordinary data gaps."""

    def export_state(self) -> dict[str, Any]:
        """Per-device state as JSON-able data."""

    def import_state(self, state: dict[str, Any]) -> None:
        """Restore what export_state returned (unknown or stale entries are ignored)."""
