"""Per-device diagnostics (Home Assistant style): the last raw messages of each device, accepted or not.

Kept in memory on the hot path (a bounded deque per device, a bounded number of devices) and handed in
batches to the registry every few seconds, so field engineers can see what a device really sent. Recording
costs a tuple append; decoding payloads to text waits for the (much rarer) hand-over.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

MAX_PAYLOAD_CHARS = 2048

_Raw = tuple[int, str, bytes, bool, "str | None"]  # received_ns, topic, payload, accepted, reason


@dataclass(slots=True, frozen=True)
class RecentMessage:
    received_ns: int
    topic: str
    payload: str
    accepted: bool
    reason: str | None = None


def _message(raw: _Raw) -> RecentMessage:
    received_ns, topic, payload, accepted, reason = raw
    text = payload[:MAX_PAYLOAD_CHARS].decode("utf-8", errors="replace")
    return RecentMessage(received_ns, topic, text, accepted, reason)


@dataclass(slots=True)
class DeviceDiagnostics:
    last_seen_ns: int = 0
    last_reading: dict[str, Any] = field(default_factory=dict)
    raw: deque[_Raw] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def recent(self) -> list[RecentMessage]:
        return [_message(r) for r in self.raw]


class DiagnosticsBuffer:
    """Last `per_device` messages for at most `max_devices` devices (least recently seen evicted)."""

    def __init__(self, per_device: int = 20, max_devices: int = 100_000) -> None:
        self.per_device = per_device
        self.max_devices = max_devices
        self._devices: OrderedDict[str, DeviceDiagnostics] = OrderedDict()
        self._new: dict[str, int] = {}  # messages recorded per device since the last take_new()

    def record(
        self,
        device_id: str,
        *,
        topic: str,
        payload: bytes,
        received_ns: int,
        accepted: bool,
        reason: str | None = None,
        reading: dict[str, Any] | None = None,
    ) -> None:
        diag = self._devices.get(device_id)
        if diag is None:
            diag = DeviceDiagnostics(raw=deque(maxlen=self.per_device))
            self._devices[device_id] = diag
            if len(self._devices) > self.max_devices:
                evicted, _ = self._devices.popitem(last=False)
                self._new.pop(evicted, None)
        else:
            self._devices.move_to_end(device_id)
        diag.last_seen_ns = received_ns
        if reading is not None:
            diag.last_reading = reading
        diag.raw.append((received_ns, topic, payload, accepted, reason))
        new = self._new.get(device_id, 0)
        if new < self.per_device:
            self._new[device_id] = new + 1

    def get(self, device_id: str) -> DeviceDiagnostics | None:
        return self._devices.get(device_id)

    def take_new(self) -> dict[str, list[RecentMessage]]:
        """Each device's messages recorded since the last call (at most `per_device`), for a batched flush."""
        new = {
            d: [_message(r) for r in list(self._devices[d].raw)[-n:]]
            for d, n in self._new.items()
            if d in self._devices
        }
        self._new.clear()
        return new
