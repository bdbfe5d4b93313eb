"""School-bus trackers: position, speed, ignition, door and head count."""

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt

from core.feeds import FeedModel, FeedSpec, Measure


class BusReading(FeedModel):
    lat: Measure(-90, 90, "Latitude, WGS84 degrees")  # type: ignore[valid-type]
    lon: Measure(-180, 180, "Longitude, WGS84 degrees")  # type: ignore[valid-type]
    speed_kmh: Measure(0, 300, "Speed, km/h")  # type: ignore[valid-type]
    heading_deg: Measure(0, 360, "Heading, degrees from north")  # type: ignore[valid-type]
    ignition: StrictBool | None = None
    door_open: StrictBool | None = None
    occupancy: Annotated[StrictInt | None, Field(default=None, ge=0, le=200, description="Children on board")]


# "No fix" as trackers send it. -1 is no Thai latitude (5-21 N) or longitude (97-106 E); configurable.
SENTINELS = dict.fromkeys(("lat", "lon", "speed_kmh", "heading_deg"), (-1.0, -999.0, -9999.0))

SPEC = FeedSpec("bus", "bus", BusReading, "School bus tracker", "รถรับส่งนักเรียน", sentinels=SENTINELS)
