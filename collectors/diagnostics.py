"""Per-device diagnostics (Home Assistant style): the last raw messages of each device, accepted or not.

Kept in memory on the hot path (a bounded deque per device, a bounded number of devices) and handed in
batches to the registry every few seconds, so field engineers can see what a device really sent. Recording
costs a tuple append; decoding payloads to text waits for the (much rarer) hand-over.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.model import RecentMessage

MAX_PAYLOAD_CHARS = 2048
MAX_PAYLOAD_BYTES = MAX_PAYLOAD_CHARS  # kept per message (a cut multi-byte character shows as U+FFFD)

_Raw = tuple[int, str, bytes, bool, "str | None"]  # received_ns, topic, payload, accepted, reason


def _message(raw: _Raw) -> RecentMessage:
    received_ns, topic, payload, accepted, reason = raw
    text = payload[:MAX_PAYLOAD_CHARS].decode("utf-8", errors="replace")
    return RecentMessage(topic, text, accepted, reason, received_ns)


@dataclass(slots=True)
class DeviceDiagnostics:
    last_seen_ns: int = 0
    last_reading: dict[str, Any] = field(default_factory=dict)
    raw: deque[_Raw] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def recent(self) -> list[RecentMessage]:
        return [_message(r) for r in self.raw]


class DiagnosticsBuffer:
    """Last `per_device` messages for at most `max_devices` registered devices and `max_unknown` ids that are
    not registered (each least recently seen evicted first), each payload truncated.

    Memory is bounded by (max_devices × per_device + max_unknown × per_unknown) × MAX_PAYLOAD_BYTES however
    large the payloads and however many distinct ids a flood of junk names in its topics: 2,000 devices
    sending 1 MB junk keep 80 MB at most; 1,000 unknown ids at most 6 MB, whatever number of ids is named.
    """

    def __init__(
        self,
        per_device: int = 20,
        max_devices: int = 20_000,
        *,
        max_unknown: int = 1_000,
        per_unknown: int = 3,
        is_registered: Callable[[str], bool] | None = None,
    ) -> None:
        self.per_device = per_device
        self.max_devices = max_devices
        self.max_unknown = max_unknown
        self.per_unknown = per_unknown
        self._is_registered = is_registered
        self._devices: OrderedDict[str, DeviceDiagnostics] = OrderedDict()
        self._unknown: OrderedDict[str, DeviceDiagnostics] = OrderedDict()
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
        table = self._devices
        diag = table.get(device_id)
        if diag is None:
            diag = self._unknown.get(device_id)
            if diag is not None:
                table = self._unknown
        if diag is None:
            # Registered devices first; ids that only a topic names share a small LRU of their own, so junk
            # cannot evict the devices an engineer is looking at.
            registered = accepted or self._is_registered is None or self._is_registered(device_id)
            table = self._devices if registered else self._unknown
            diag = DeviceDiagnostics(raw=deque(maxlen=self.per_device if registered else self.per_unknown))
            table[device_id] = diag
            if len(table) > (self.max_devices if registered else self.max_unknown):
                evicted, _ = table.popitem(last=False)
                self._new.pop(evicted, None)
        else:
            table.move_to_end(device_id)
        diag.last_seen_ns = received_ns
        if reading is not None:
            diag.last_reading = reading
        diag.raw.append((received_ns, topic, payload[:MAX_PAYLOAD_BYTES], accepted, reason))
        new = self._new.get(device_id, 0)
        if new < (diag.raw.maxlen or self.per_device):
            self._new[device_id] = new + 1

    def get(self, device_id: str) -> DeviceDiagnostics | None:
        return self._devices.get(device_id) or self._unknown.get(device_id)

    @property
    def size(self) -> int:
        """Devices and unknown ids kept (not __len__: an empty buffer must stay truthy for `x or default`)."""
        return len(self._devices) + len(self._unknown)

    def take_new(self) -> dict[str, list[RecentMessage]]:
        """Each device's messages recorded since the last call (at most `per_device`), for a batched flush."""
        new = {}
        for device_id, count in self._new.items():
            diag = self.get(device_id)
            if diag is not None:
                new[device_id] = [_message(r) for r in list(diag.raw)[-count:]]
        self._new.clear()
        return new

    def put_back(self, taken: dict[str, list[RecentMessage]]) -> None:
        """Mark what `take_new()` returned as new again (its flush failed), so the next flush writes it: the
        messages are still in each device's deque (or newer ones that replaced them); counts stay capped by
        the deque and evicted devices are skipped, so a registry that keeps failing grows nothing."""
        for device_id, messages in taken.items():
            diag = self.get(device_id)
            if diag is None:
                continue
            cap = diag.raw.maxlen or self.per_device
            self._new[device_id] = min(cap, self._new.get(device_id, 0) + len(messages))
