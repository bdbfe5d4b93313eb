"""The registry seam as the collectors see it: look a device up, from memory, never per-message I/O.

The gateway provides the real implementation (a cache over the registry database, refreshed on change);
`StaticDirectory` is the small in-process one for unit tests and the demo.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from core.model import DeviceInfo


class DeviceDirectory(Protocol):
    def by_id(self, device_id: str) -> DeviceInfo | None: ...

    def by_dev_eui(self, dev_eui: str) -> DeviceInfo | None: ...


class StaticDirectory:
    """A fixed set of devices held in memory."""

    def __init__(self, devices: Iterable[DeviceInfo] = ()) -> None:
        self._by_id: dict[str, DeviceInfo] = {}
        self._by_eui: dict[str, DeviceInfo] = {}
        for device in devices:
            self.put(device)

    def put(self, device: DeviceInfo) -> None:
        self._by_id[device.device_id] = device
        if device.dev_eui:
            self._by_eui[device.dev_eui.lower()] = device

    def by_id(self, device_id: str) -> DeviceInfo | None:
        return self._by_id.get(device_id)

    def by_dev_eui(self, dev_eui: str) -> DeviceInfo | None:
        return self._by_eui.get(dev_eui.lower())

    def __len__(self) -> int:
        return len(self._by_id)
