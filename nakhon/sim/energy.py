"""Energy meters: load profiles by site kind (office, industrial, school, hospital, pump, street lighting),
working days and Thai holidays, the cumulative import register; meter-spike incidents."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nakhon.sim.feed import FeedSignals, SharedSignals, profile, temperature_shape

if TYPE_CHECKING:
    from nakhon.sim.city import SimDevice
    from nakhon.sim.incidents import Incident
    from nakhon.sim.localtime import LocalDay


@dataclass(slots=True)
class _Meter:
    ts_ms: int
    kwh: float
    power_kw: float


class EnergySignals(FeedSignals):
    """Electricity meters; `nominal_voltage_v` the supply's nominal voltage."""

    feed = "energy"
    out_of_range = (("power_factor", 1.05, 1.9), ("voltage_v", -240, -1), ("current_a", -50, -0.5))

    def __init__(self, shared: SharedSignals, *, nominal_voltage_v: float = 230.0) -> None:
        super().__init__(shared)
        self.nominal_voltage_v = nominal_voltage_v
        self._meters: dict[str, _Meter] = {}

    @staticmethod
    def _load_fraction(kind: str, day: LocalDay, hour: float, raining: bool) -> float:
        """Share of the contracted demand drawn at this hour, by site kind."""
        work = day.workday
        if kind == "office":
            if not work:
                return 0.14
            return profile((0.14, 0.14, 0.14, 0.14, 0.14, 0.14, 0.18, 0.35, 0.6, 0.68, 0.7, 0.7,
                             0.58, 0.7, 0.72, 0.72, 0.68, 0.5, 0.35, 0.3, 0.28, 0.25, 0.18, 0.15), hour)  # fmt: skip
        if kind == "industrial":
            if not work:
                return 0.5 if day.weekday == 5 else 0.35
            return profile((0.45, 0.45, 0.45, 0.45, 0.45, 0.45, 0.5, 0.62, 0.75, 0.86, 0.88, 0.88,
                             0.8, 0.88, 0.88, 0.88, 0.86, 0.85, 0.85, 0.84, 0.84, 0.82, 0.6, 0.46), hour)  # fmt: skip
        if kind == "school":
            if not work or day.month == 4:  # April: school holidays
                return 0.07
            return profile((0.07, 0.07, 0.07, 0.07, 0.07, 0.07, 0.1, 0.3, 0.55, 0.6, 0.62, 0.62,
                             0.5, 0.6, 0.62, 0.55, 0.35, 0.15, 0.1, 0.08, 0.08, 0.07, 0.07, 0.07), hour)  # fmt: skip
        if kind == "hospital":
            return 0.5 + 0.2 * max(0.0, math.sin(math.pi * (hour - 7) / 14)) if 7 <= hour <= 21 else 0.5
        if kind == "pump":
            base = 0.55 if hour >= 22 or hour < 5 else 0.12  # water supply pumped off-peak
            return min(0.95, base + (0.7 if raining else 0.0))  # drainage during rain
        if kind == "street_lighting":
            return 0.95 if hour >= 18.5 or hour < 6.0 else 0.02
        return 0.4

    def reading(
        self, d: SimDevice, ts_ms: int, day: LocalDay, hour: float, rng: random.Random, incidents: list[Incident]
    ) -> dict[str, Any]:
        p = self.shared.params(d)
        contracted = float(d.site.get("contracted_kw", 100.0))
        raining = d.kind == "pump" and self.shared.weather.intensity(d.district, ts_ms / 1000) > 0
        frac = self._load_fraction(d.kind, day, hour, raining)
        if d.kind in ("office", "school", "hospital") and frac > 0.3:
            frac += 0.06 * temperature_shape(hour)  # air conditioning follows the afternoon heat
        frac = min(0.98, frac * p["load"])
        power = contracted * frac * (1 + 0.025 * rng.gauss(0, 1))
        pf = p["pf"] + 0.03 * (frac - 0.5) + 0.004 * rng.gauss(0, 1)
        for incident in incidents:
            if incident.kind == "meter_spike":
                power = contracted * incident.magnitude * (1 + 0.02 * rng.gauss(0, 1))
                pf = 0.885 + 0.005 * rng.random()
        power = max(0.0, power)
        pf = min(0.98, max(0.88, pf))
        voltage = self.nominal_voltage_v + p["v_offset"] - 4.0 * min(frac, 1.0) + 0.6 * rng.gauss(0, 1)
        phases = 3 if contracted > 15 else 1
        current = power * 1000 / (phases * voltage * pf)  # per-phase current
        meter = self._meters.get(d.device_id)
        if meter is None:
            meter = self._meters[d.device_id] = _Meter(ts_ms, p["kwh0"], power)
        elif ts_ms > meter.ts_ms:
            meter.kwh += (meter.power_kw + power) / 2 * (ts_ms - meter.ts_ms) / 3_600_000
            meter.ts_ms = ts_ms
            meter.power_kw = power
        return {
            "energy_kwh": round(meter.kwh, 3),
            "power_kw": round(power, 3),
            "voltage_v": round(voltage, 1),
            "current_a": round(current, 2),
            "power_factor": round(pf, 3),
        }


__all__ = ["EnergySignals"]
