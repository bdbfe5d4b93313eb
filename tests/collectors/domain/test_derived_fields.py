"""The derived-field list `rules check` uses is exactly what the enrichers set (core/fields.py)."""

from __future__ import annotations

from collectors.domain import default_enrichers
from core.fields import DERIVED_FIELDS, DERIVED_TAGS
from core.model import DeviceInfo, Reading

NS = 1_000_000_000
T0 = 1_767_668_400 * NS  # 2026-01-06 10:00 Asia/Bangkok (a working day: on-peak)

SAMPLES = {
    "air": [{"pm25_ugm3": 40.0, "pm10_ugm3": 60.0, "o3_ppb": 20.0, "co_ppm": 0.5, "no2_ppb": 10.0, "so2_ppb": 2.0}],
    "flood": [{"level_m": 2.0}, {"level_m": 2.1}],
    "energy": [{"energy_kwh": 100.0}, {"energy_kwh": 101.0}, {"energy_kwh": 102.0}],  # the last completes a block
    "bus": [
        {"lat": 13.05, "lon": 100.93, "speed_kmh": 30.0, "ignition": True, "occupancy": 3},
        {"lat": 13.06, "lon": 100.93, "speed_kmh": 0.0, "ignition": False, "occupancy": 1},
        {"lat": 13.06, "lon": 100.93, "speed_kmh": 0.0, "ignition": True, "occupancy": 1},
    ],
}
STEP_S = {"energy": 8 * 60}  # readings at 10:00, 10:08, 10:16: the 10:00-10:15 demand block completes
SITES = {"flood": {"ground_level_m": 1.0, "bank_level_m": 3.0}, "energy": {"contracted_kw": 100.0}}


def test_enrichers_set_exactly_the_listed_derived_fields_and_tags() -> None:
    for feed, enricher in default_enrichers().items():
        device = DeviceInfo(f"d-{feed}", feed, "c", "d", site=SITES.get(feed, {}))
        seen_fields: set[str] = set()
        seen_tags: set[str] = set()
        for i, fields in enumerate(SAMPLES[feed]):
            reading = Reading(device.device_id, feed, "c", "d", T0 + i * STEP_S.get(feed, 60) * NS, dict(fields))
            enricher.enrich(reading, device)
            seen_fields |= set(reading.fields) - set(fields)
            seen_tags |= set(reading.tags)
        assert seen_fields == {f.name for f in DERIVED_FIELDS[feed]}, feed
        assert seen_tags == set(DERIVED_TAGS.get(feed, {})), feed
