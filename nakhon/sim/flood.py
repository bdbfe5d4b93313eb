"""Water level and rain gauges: canal level (tide, wet-season fill, response to rain), rain since the last
report, solar-charged battery; canal-rise incidents (the rise and the recession after)."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from nakhon.sim.feed import FeedSignals, SharedSignals
from nakhon.sim.incidents import CANAL_RISE_M_PER_S, Incident
from nakhon.sim.localtime import bangkok

if TYPE_CHECKING:
    from nakhon.sim.city import SimDevice
    from nakhon.sim.localtime import LocalDay


class FloodSignals(FeedSignals):
    """Canal and tidal gauges with rain gauges."""

    feed = "flood"
    out_of_range = (("battery_pct", 101, 180), ("rain_mm", -20, -0.5), ("level_m", 600, 999))

    def __init__(self, shared: SharedSignals) -> None:
        super().__init__(shared)
        self._rain_last: dict[str, int] = {}

    def normal_canal_level(self, device: SimDevice, ts_ms: int) -> float:
        """The gauge's level without incidents or noise (m, site datum)."""
        ground = float(device.site.get("ground_level_m", 0.0))
        bank = float(device.site.get("bank_level_m", ground + 2.0))
        depth = bank - ground
        p = self.shared.params(device)
        day, _hour = bangkok(ts_ms)
        t_s = ts_ms / 1000
        tidal = 1.0 if device.kind == "tidal" else 0.35
        tide = tidal * (
            0.35 * math.sin(2 * math.pi * t_s / (23.93 * 3600) + p["phase1"])
            + 0.2 * math.sin(2 * math.pi * t_s / (12.42 * 3600) + p["phase2"])
        )
        base = depth * (p["fill"] + (0.08 if day.wet else 0.0))
        rain = self.shared.weather.canal_response(device.district, t_s, depth)
        return min(ground + 0.85 * depth, max(ground + 0.05, ground + base + tide + rain))

    def reading(
        self, d: SimDevice, ts_ms: int, day: LocalDay, hour: float, rng: random.Random, incidents: list[Incident]
    ) -> dict[str, Any]:
        p = self.shared.params(d)
        t_s = ts_ms / 1000
        level = self.normal_canal_level(d, ts_ms)
        last = self._rain_last.get(d.device_id)
        self._rain_last[d.device_id] = ts_ms
        rain = self.shared.weather.between(d.district, last / 1000, t_s) if last is not None else 0.0
        for incident in self.shared.incidents(d.device_id):
            # The rise and the recession after it (same rate) also apply after the incident window ends.
            extra = self._canal_extra(d, incident, ts_ms)
            level += extra
            if incident.active(ts_ms) and last is not None:
                a = max(last / 1000, incident.start_ms / 1000)
                rain += 45.0 * max(0.0, t_s - a) / 3600  # a heavy storm over the catchment
        level += 0.004 * rng.gauss(0, 1)
        solar = max(0.0, math.sin(math.pi * (hour - 7) / 11)) if 7 <= hour <= 18 else 0.0
        battery = p["battery"] + 5.0 * solar - 2.0 + 0.3 * rng.gauss(0, 1)
        return {
            "level_m": round(level, 3),
            "rain_mm": round(min(500.0, rain), 1),
            "battery_pct": round(min(100.0, max(0.0, battery)), 1),
        }

    def _canal_extra(self, d: SimDevice, incident: Incident, ts_ms: int) -> float:
        if incident.kind != "canal_rise" or ts_ms < incident.start_ms:
            return 0.0
        bank = float(d.site.get("bank_level_m", 2.0))
        peak = bank + incident.magnitude
        start_level = self.normal_canal_level(d, incident.start_ms)
        needed = max(0.0, peak - start_level)
        duration_s = incident.duration_s
        # ~15 cm / 10 min; faster only when the incident was shortened to fit a short run.
        rise_s = min(needed / CANAL_RISE_M_PER_S, 0.6 * duration_s)
        rate = needed / rise_s if rise_s > 0 else 0.0
        elapsed = (ts_ms - incident.start_ms) / 1000
        if elapsed < rise_s:
            target = start_level + rate * elapsed
        elif ts_ms < incident.end_ms:
            target = peak
        else:
            target = peak - rate * (ts_ms - incident.end_ms) / 1000
        return max(0.0, target - self.normal_canal_level(d, ts_ms))


__all__ = ["FloodSignals"]
