"""The common interface of the per-feed signal generators and what they share.

A `FeedSignals` turns (device, simulated time) into the canonical fields of its feed. What the generators share
lives in `SharedSignals`: the seed, each device's random stream and fixed parameters, the weather and the
incidents by device. `Simulation` (in `signals`) builds one of each and composes them.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from nakhon.sim.weather import Weather

if TYPE_CHECKING:
    from nakhon.sim.city import SimDevice
    from nakhon.sim.incidents import Incident
    from nakhon.sim.localtime import LocalDay


def profile(table: tuple[float, ...], hour: float) -> float:
    """Linear interpolation in a 24-value hourly table (value at hh:00), wrapping at midnight."""
    i = int(hour) % 24
    f = hour - int(hour)
    return table[i] * (1 - f) + table[(i + 1) % 24] * f


def temperature_shape(hour: float) -> float:
    """-1 at 06:00 (coolest), +1 at 14:30 (hottest), cosine in between."""
    if 6.0 <= hour < 14.5:
        return -math.cos(math.pi * (hour - 6.0) / 8.5)
    return math.cos(math.pi * ((hour - 14.5) % 24) / 15.5)


class SharedSignals:
    """What every feed's generator reads: the seed, per-device random streams and parameters, the weather,
    the incidents of each device."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.weather = Weather(seed)
        self._rngs: dict[str, random.Random] = {}
        self._dev_params: dict[str, dict[str, float]] = {}
        self._by_device: dict[str, list[Incident]] = {}

    def add_incident(self, incident: Incident) -> None:
        for device_id in incident.device_ids:
            self._by_device.setdefault(device_id, []).append(incident)

    def incidents(self, device_id: str) -> Sequence[Incident]:
        """Every incident on the device, active or not (a canal recedes after its incident)."""
        return self._by_device.get(device_id, ())

    def rng(self, device_id: str) -> random.Random:
        rng = self._rngs.get(device_id)
        if rng is None:
            rng = self._rngs[device_id] = random.Random(f"signal:{self.seed}:{device_id}")
        return rng

    def params(self, device: SimDevice) -> dict[str, float]:
        """Fixed per-device parameters (phases, offsets) derived from the seed and the device id."""
        params = self._dev_params.get(device.device_id)
        if params is None:
            r = random.Random(f"params:{self.seed}:{device.device_id}")
            params = {
                "phase1": r.uniform(0, 2 * math.pi),
                "phase2": r.uniform(0, 2 * math.pi),
                "fill": r.uniform(0.3, 0.45),
                "battery": r.uniform(72, 94),
                "v_offset": r.uniform(-3.0, 3.0),
                "pf": r.uniform(0.9, 0.96) if device.kind != "industrial" else r.uniform(0.89, 0.93),
                "load": r.uniform(0.85, 1.1),
                "kwh0": float(device.site.get("contracted_kw", 100.0)) * r.uniform(0.3, 0.5) * 8760 * r.uniform(1, 8),
                "pm": r.uniform(0.9, 1.1),
            }
            self._dev_params[device.device_id] = params
        return params


class FeedSignals(ABC):
    """The signal generator of one feed."""

    feed: ClassVar[str]
    # Values outside the schema's range (field, low, high of the bad value), for malformed messages.
    out_of_range: ClassVar[tuple[tuple[str, float, float], ...]]

    def __init__(self, shared: SharedSignals) -> None:
        self.shared = shared

    @abstractmethod
    def reading(
        self, d: SimDevice, ts_ms: int, day: LocalDay, hour: float, rng: random.Random, incidents: list[Incident]
    ) -> dict[str, Any]:
        """The canonical fields of `d` at `ts_ms` (Bangkok `day` and `hour`), drawing noise from `rng` (the device's
        own stream); `incidents`: those active on the device now."""


__all__ = ["FeedSignals", "SharedSignals", "profile", "temperature_shape"]
