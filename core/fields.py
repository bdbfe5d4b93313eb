"""The derived fields and tags each feed's enricher (collectors/domain/) may add, with their types and ranges:
declared in the core, as the feeds are, because the rules read them too.

This is the list `nakhon rules check` checks rule fields against (with the feed schemas' canonical fields):
a rule on a field no reading ever has can never fire. `tests/collectors/domain/test_derived_fields.py` runs the
enrichers and checks that they set exactly these names, so the list cannot drift from the code.
`lo` / `hi` are None where a value is not bounded (percent of bank above 100 % is an overbank).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldKind = Literal["number", "int", "bool", "str"]


@dataclass(frozen=True, slots=True)
class DerivedField:
    name: str
    kind: FieldKind
    lo: float | None = None
    hi: float | None = None
    description: str = ""


DERIVED_FIELDS: dict[str, tuple[DerivedField, ...]] = {
    "air": (
        DerivedField("aqi_th", "int", 0, None, "Thai PCD AQI (above 200 extrapolated, see aqi.py)"),
        DerivedField("aqi_th_band", "int", 1, 5, "Thai AQI band 1 (very good) .. 5 (affects health)"),
        DerivedField("aqi_th_pollutant", "str", description="pollutant that sets the Thai AQI"),
        DerivedField("aqi_us", "int", 0, 500, "US EPA AQI (2024)"),
        DerivedField("aqi_us_pollutant", "str", description="pollutant that sets the US AQI"),
        DerivedField("pm25_24h_ugm3", "number", 0, 1000, "PM2.5 24-hour mean, µg/m³"),
    ),
    "flood": (
        DerivedField("level_pct_bank", "number", None, None, "water level, % of the bank above ground (ThaiWater)"),
        DerivedField("rise_cm_per_10min", "number", None, None, "rate of rise, cm per 10 minutes"),
    ),
    "energy": (
        DerivedField("interval_kwh", "number", 0, None, "energy since the previous reading, kWh"),
        DerivedField("co2e_kg", "number", 0, None, "CO2e of the interval, kg (TGO factor)"),
        DerivedField("interval_on_peak_kwh", "number", 0, None, "the interval's energy in on-peak time, kWh"),
        DerivedField("interval_off_peak_kwh", "number", 0, None, "the interval's energy in off-peak time, kWh"),
        DerivedField("demand_15min_kw", "number", None, None,
                     "average demand of the aligned 15-minute block the reading completes, kW"),
    ),
    "bus": (
        DerivedField("speed_limit_kmh", "number", 0, 300, "speed limit where the bus is, km/h"),
        DerivedField("over_speed_kmh", "number", 0, 300, "speed above the limit, km/h"),
        DerivedField("trip_id", "str", description="current trip (ignition on)"),
        DerivedField("trip_distance_km", "number", 0, None, "distance of the current trip, km"),
        DerivedField("stop_dwell_s", "number", 0, None, "seconds stopped"),
        DerivedField("ignition_off_s", "number", 0, None, "seconds since ignition off"),
        DerivedField("child_left_s", "number", 0, None, "seconds since ignition off with children counted"),
    ),
}

DERIVED_TAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "energy": {"tou": ("on_peak", "off_peak")},
}

__all__ = ["DERIVED_FIELDS", "DERIVED_TAGS", "DerivedField", "FieldKind"]
