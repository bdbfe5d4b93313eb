"""Air-quality stations: particulates, gases and weather (units in the field names)."""

from core.feeds import FeedModel, FeedSpec, Measure


class AirReading(FeedModel):
    pm25_ugm3: Measure(0, 1000, "PM2.5, µg/m³")  # type: ignore[valid-type]
    pm10_ugm3: Measure(0, 2000, "PM10, µg/m³")  # type: ignore[valid-type]
    o3_ppb: Measure(0, 1000, "Ozone, ppb")  # type: ignore[valid-type]
    co_ppm: Measure(0, 500, "Carbon monoxide, ppm")  # type: ignore[valid-type]
    no2_ppb: Measure(0, 3000, "Nitrogen dioxide, ppb")  # type: ignore[valid-type]
    so2_ppb: Measure(0, 3000, "Sulphur dioxide, ppb")  # type: ignore[valid-type]
    temperature_c: Measure(-40, 70, "Air temperature, °C")  # type: ignore[valid-type]
    humidity_pct: Measure(0, 100, "Relative humidity, %")  # type: ignore[valid-type]


# Values devices and public feeds (Air4Thai: -1, -999) send for "no value": missing, never a reading.
# Not -1 for temperature (a real value).
_MISSING = (-1.0, -999.0, -9999.0)
SENTINELS = {
    **dict.fromkeys(("pm25_ugm3", "pm10_ugm3", "o3_ppb", "co_ppm", "no2_ppb", "so2_ppb", "humidity_pct"), _MISSING),
    "temperature_c": (-999.0, -9999.0),
}

SPEC = FeedSpec(
    "air", "air_quality", AirReading, "Air quality station", "สถานีตรวจวัดคุณภาพอากาศ", sentinels=SENTINELS
)
