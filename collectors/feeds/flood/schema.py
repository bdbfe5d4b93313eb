"""Flood / water-level gauges: level above the site datum (m MSL where the site is surveyed), rain, battery."""

from core.feeds import FeedModel, FeedSpec, Measure


class FloodReading(FeedModel):
    level_m: Measure(-50, 500, "Water level, m (above the site datum, MSL where surveyed)")  # type: ignore[valid-type]
    rain_mm: Measure(0, 500, "Rainfall since the last report, mm")  # type: ignore[valid-type]
    battery_pct: Measure(0, 100, "Gauge battery, %")  # type: ignore[valid-type]


# "No value" as gauges send it; a level may really be negative (below the datum), so not -1 for it.
SENTINELS = {
    "level_m": (-999.0, -9999.0),
    "rain_mm": (-1.0, -999.0, -9999.0),
    "battery_pct": (-1.0, -999.0, -9999.0),
}

SPEC = FeedSpec("flood", "water_level", FloodReading, "Water-level gauge", "สถานีวัดระดับน้ำ", sentinels=SENTINELS)
