"""Air quality: PM2.5 with its diurnal and seasonal cycle (haze in the dry season, washout by rain), PM10,
ozone, traffic gases, temperature and humidity; haze incidents."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from nakhon.sim.feed import FeedSignals, profile, temperature_shape

if TYPE_CHECKING:
    from nakhon.sim.city import SimDevice
    from nakhon.sim.incidents import Incident
    from nakhon.sim.localtime import LocalDay

# Relative PM2.5 by hour: high at night and in the morning (shallow boundary layer), lowest mid-afternoon.
_PM_DIURNAL = (
    1.20, 1.22, 1.25, 1.27, 1.30, 1.33, 1.38, 1.40, 1.32, 1.15, 0.98, 0.85,
    0.76, 0.70, 0.67, 0.66, 0.70, 0.80, 0.95, 1.05, 1.10, 1.14, 1.16, 1.18,
)  # fmt: skip
# Road traffic (CO, NO2): morning and evening rush hours.
_TRAFFIC = (
    0.35, 0.30, 0.28, 0.28, 0.32, 0.50, 0.85, 1.20, 1.25, 1.00, 0.80, 0.75,
    0.78, 0.75, 0.75, 0.85, 1.00, 1.25, 1.30, 1.05, 0.80, 0.65, 0.50, 0.42,
)  # fmt: skip
# PM2.5 by month: Dec–Apr haze season, lowest in the south-west monsoon.
_PM_SEASON = {1: 1.0, 2: 1.0, 3: 0.9, 4: 0.72, 5: 0.4, 6: 0.32, 7: 0.3, 8: 0.3, 9: 0.32, 10: 0.38, 11: 0.62, 12: 0.92}
_TEMP_MEAN = {1: 29.8, 2: 30.2, 3: 30.8, 4: 31.2, 5: 31.0, 6: 30.6, 7: 30.3, 8: 30.2, 9: 29.9, 10: 29.8, 11: 29.6,
              12: 29.4}  # fmt: skip
_AIR_KIND_PM = {"roadside": 1.15, "residential": 0.95, "industrial": 1.25, "port": 1.3}
_AIR_KIND_TRAFFIC = {"roadside": 1.4, "residential": 0.7, "industrial": 1.0, "port": 1.2}


class AirSignals(FeedSignals):
    """Air-quality stations (roadside, residential, industrial, port)."""

    feed = "air"
    out_of_range = (("humidity_pct", 101, 160), ("pm25_ugm3", -50, -1), ("temperature_c", 75, 120))

    def _day_factor(self, district: str, day: int) -> float:
        """A day-to-day (weather) factor for air pollution in a district, 0.75–1.3."""
        r = random.Random(f"dayf:{self.shared.seed}:{district}:{day}")
        return r.uniform(0.75, 1.3)

    def reading(
        self, d: SimDevice, ts_ms: int, day: LocalDay, hour: float, rng: random.Random, incidents: list[Incident]
    ) -> dict[str, Any]:
        p = self.shared.params(d)
        dayf = self._day_factor(d.district, day.day)
        raining = self.shared.weather.intensity(d.district, ts_ms / 1000) > 0
        washout = 0.6 if raining else 1.0
        raw = 21.0 * _PM_SEASON[day.month] * profile(_PM_DIURNAL, hour) * _AIR_KIND_PM.get(d.kind, 1.0)
        raw *= dayf * p["pm"] * washout * (1 + 0.06 * rng.gauss(0, 1))
        # A coastal town with a sea breeze: outside haze episodes PM2.5 stays in the PCD yellow band at most
        # (≤ 37.5 µg/m³, AQI ≤ 100), so an orange or red AQI in the simulation is an incident, never the weather.
        pm25 = raw if raw < 30 else 30 + 7.4 * math.tanh((raw - 30) / 7.4)
        traffic = profile(_TRAFFIC, hour) * _AIR_KIND_TRAFFIC.get(d.kind, 1.0)
        ozone_peak = 38.0 + (18.0 if day.dry else 0.0)
        o3 = 6.0 + ozone_peak * math.exp(-(((hour - 14.5) / 3.2) ** 2)) - 4.0 * traffic + 2.0 * rng.gauss(0, 1)
        shape = temperature_shape(hour)
        temperature = _TEMP_MEAN[day.month] + (4.0 if day.dry else 3.4) * shape + 0.3 * rng.gauss(0, 1)
        humidity = 72.0 - 15.0 * shape + (7.0 if day.wet else -3.0) + 1.5 * rng.gauss(0, 1)
        if raining:
            temperature -= 2.5
            humidity += 12.0
        industrial = d.kind in ("industrial", "port")
        for incident in incidents:
            if incident.kind == "haze":
                ramp = min(1.0, (ts_ms - incident.start_ms) / max(1.0, 0.05 * (incident.end_ms - incident.start_ms)))
                target = incident.magnitude * (0.85 + 0.15 * profile(_PM_DIURNAL, hour)) + 3 * rng.gauss(0, 1)
                target = min(150.0, max(80.0, target))
                pm25 = max(pm25, pm25 + (target - pm25) * ramp)
        return {
            "pm25_ugm3": round(max(1.0, pm25), 1),
            "pm10_ugm3": round(max(2.0, pm25 * (1.7 if industrial else 1.5) + 4 + 2 * rng.gauss(0, 1)), 1),
            "o3_ppb": round(max(1.0, o3), 1),
            "co_ppm": round(max(0.05, 0.2 + 0.75 * traffic + 0.05 * rng.gauss(0, 1)), 2),
            "no2_ppb": round(max(1.0, 5.0 + 24.0 * traffic + 2.0 * rng.gauss(0, 1)), 1),
            "so2_ppb": round(
                max(0.2, (7.0 if industrial else 1.8) + (2.5 if industrial else 0.5) * rng.gauss(0, 1)), 1
            ),
            "temperature_c": round(temperature, 1),
            "humidity_pct": round(min(99.0, max(35.0, humidity)), 1),
        }


__all__ = ["AirSignals"]
