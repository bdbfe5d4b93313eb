"""The derived-values seam: per-feed enrichers add derived fields and tags to a validated reading.

An enricher may keep per-device state (rolling averages, the last register value); that state is exported
as plain JSON-able data so it survives a restart.
"""

from __future__ import annotations

from typing import Any, Protocol

from collectors.model import DeviceInfo, Reading


class Enricher(Protocol):
    feed: str

    def enrich(self, reading: Reading, device: DeviceInfo) -> None:
        """Add derived fields (and tags) to `reading` in place. Never raises for ordinary data gaps."""

    def export_state(self) -> dict[str, Any]:
        """Per-device state as JSON-able data."""

    def import_state(self, state: dict[str, Any]) -> None:
        """Restore what export_state returned (unknown or stale entries are ignored)."""
