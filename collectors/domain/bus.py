"""School-bus derived values: speed limit and over-speed, trips, stop dwell, child-left-behind, ignition-off time.

Sources (/work/shared/reference/thailand.md, "School buses and vans"):

* Speed limits for school buses (2021 ministerial regulation as REPORTED IN THE PRESS, UNVERIFIED against the
  gazette): 60 km/h in Bangkok, Pattaya and municipal areas; 70 elsewhere; 80 on divided roads with ≥2 lanes
  each way; 90 on expressways. Configurable (`DEFAULT_SPEED_LIMITS_KMH`, DomainConfig.speed_limits_kmh).
* School zones may set lower limits: GeoJSON FeatureCollection of (Multi)Polygons with properties
  `speed_limit_kmh` and `name`. Where zones overlap, the smallest limit wins; outside every zone the device's
  `site["speed_limit_kmh"]` applies, else the configured default (60, the municipal limit: nakhon's users are
  municipalities).
* Child left behind: children have died in school vans left with the engine off (Samut Prakan 2016,
  Nakhon Si Thammarat 2020, Chon Buri 2022). `child_left_s` = seconds since ignition went off while the
  occupancy count is still positive (0 when not applicable); the rules engine decides after how many minutes
  to alert.

Trips run from ignition on to ignition off; the distance is the haversine sum of consecutive fixes.
Stop dwell is the time spent below 3 km/h (configurable).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shapely.geometry import Point, shape
from shapely.prepared import PreparedGeometry, prep

from collectors.domain.base import restorable
from core.model import DeviceInfo, Reading

# Press-reported, UNVERIFIED (thailand.md): keyed by road class.
DEFAULT_SPEED_LIMITS_KMH: dict[str, float] = {
    "municipal": 60.0,  # Bangkok, Pattaya and municipal areas
    "rural": 70.0,  # elsewhere
    "divided": 80.0,  # divided road with >= 2 lanes each way
    "expressway": 90.0,
}
DEFAULT_ROAD_CLASS = "municipal"
STOP_SPEED_KMH = 3.0
EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius
_NS = 1_000_000_000


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two WGS84 points on a spherical Earth, km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class SpeedZone:
    name: str
    speed_limit_kmh: float
    geometry: PreparedGeometry


class SpeedZones:
    """Speed-limit zones from a GeoJSON FeatureCollection; lookup returns the smallest limit covering a point."""

    def __init__(self, zones: list[SpeedZone] | None = None) -> None:
        self.zones = zones or []

    @classmethod
    def from_geojson(cls, data: Mapping[str, Any]) -> SpeedZones:
        if data.get("type") != "FeatureCollection":
            raise ValueError("speed zones must be a GeoJSON FeatureCollection")
        zones: list[SpeedZone] = []
        for i, feature in enumerate(data.get("features", [])):
            props = feature.get("properties") or {}
            geom = shape(feature["geometry"])
            if geom.geom_type not in ("Polygon", "MultiPolygon"):
                raise ValueError(f"zone {i}: geometry must be a Polygon or MultiPolygon, not {geom.geom_type}")
            limit = float(props["speed_limit_kmh"])
            zones.append(SpeedZone(str(props.get("name", f"zone {i}")), limit, prep(geom)))
        return cls(zones)

    @classmethod
    def from_file(cls, path: str | Path) -> SpeedZones:
        return cls.from_geojson(json.loads(Path(path).read_text(encoding="utf-8")))

    def lookup(self, lat: float, lon: float) -> SpeedZone | None:
        """The zone with the smallest limit that covers (lat, lon) — boundary included — or None."""
        if not self.zones:
            return None  # no zones configured: skip building a geometry for every reading
        point = Point(lon, lat)  # GeoJSON order is (x=lon, y=lat)
        best: SpeedZone | None = None
        for zone in self.zones:
            if zone.geometry.covers(point) and (best is None or zone.speed_limit_kmh < best.speed_limit_kmh):
                best = zone
        return best


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def site_speed_limit(site: Mapping[str, Any], limits_kmh: Mapping[str, float], default_kmh: float) -> float:
    """Limit outside zones: the site's `speed_limit_kmh`, else its `road_class` in `limits_kmh`, else default."""
    explicit = _number(site.get("speed_limit_kmh"))
    if explicit is not None and explicit > 0:
        return explicit
    road_class = site.get("road_class")
    if isinstance(road_class, str) and road_class in limits_kmh:
        return limits_kmh[road_class]
    return default_kmh


@dataclass
class BusState:
    """Per-device state; plain values so it exports as JSON."""

    time_ns: int | None = None
    ignition: bool | None = None
    ignition_off_since_ns: int | None = None
    trip_id: str | None = None
    trip_start_ns: int | None = None
    trip_distance_km: float = 0.0
    lat: float | None = None
    lon: float | None = None
    stopped_since_ns: int | None = None
    occupancy: int | None = None


def _trip_id(device_id: str, start_ns: int) -> str:
    start = datetime.fromtimestamp(start_ns // _NS, tz=UTC)
    return f"{device_id}-{start:%Y%m%dT%H%M%SZ}"


class BusEnricher:
    """Feed "bus": `speed_limit_kmh`, `over_speed_kmh`, `trip_id`, `trip_distance_km`, `stop_dwell_s`,
    `ignition_off_s`, `child_left_s`.

    Readings older than the device's last one only get the stateless speed-limit fields, so a late packet
    cannot reopen a closed trip or rewind the dwell and ignition timers.
    """

    feed = "bus"

    def __init__(
        self,
        zones: SpeedZones | None = None,
        limits_kmh: Mapping[str, float] | None = None,
        default_limit_kmh: float | None = None,
        stop_speed_kmh: float = STOP_SPEED_KMH,
    ) -> None:
        self.zones = zones or SpeedZones()
        self.limits_kmh = dict(limits_kmh or DEFAULT_SPEED_LIMITS_KMH)
        self.default_limit_kmh = (
            default_limit_kmh if default_limit_kmh is not None else self.limits_kmh[DEFAULT_ROAD_CLASS]
        )
        self.stop_speed_kmh = stop_speed_kmh
        self._state: dict[str, BusState] = {}

    def speed_limit(self, lat: float | None, lon: float | None, device: DeviceInfo) -> float:
        if lat is not None and lon is not None:
            zone = self.zones.lookup(lat, lon)
            if zone is not None:
                return zone.speed_limit_kmh
        return site_speed_limit(device.site, self.limits_kmh, self.default_limit_kmh)

    def trip(self, device_id: str) -> BusState | None:
        """Current state of a device (trip id, start, distance), for the API and tests."""
        return self._state.get(device_id)

    def enrich(self, reading: Reading, device: DeviceInfo) -> None:
        f = reading.fields
        lat, lon, speed = _number(f.get("lat")), _number(f.get("lon")), _number(f.get("speed_kmh"))
        limit = self.speed_limit(lat, lon, device)
        reading.fields["speed_limit_kmh"] = limit
        if speed is not None:
            reading.fields["over_speed_kmh"] = max(0.0, speed - limit)

        st = self._state.setdefault(reading.device_id, BusState())
        t = reading.time_ns
        if st.time_ns is not None and t < st.time_ns:
            return
        ignition = f.get("ignition")
        occupancy = f.get("occupancy")
        if isinstance(occupancy, int) and not isinstance(occupancy, bool):
            st.occupancy = occupancy

        trip_starts = False
        if isinstance(ignition, bool) and ignition != st.ignition:
            if ignition:
                trip_starts = True
                st.trip_id, st.trip_start_ns, st.trip_distance_km = _trip_id(reading.device_id, t), t, 0.0
                st.ignition_off_since_ns = None
            else:
                st.trip_id, st.trip_start_ns = None, None
                st.ignition_off_since_ns = t
            st.ignition = ignition

        if lat is not None and lon is not None:
            # a trip starts at its first fix: the hop from the last fix before ignition-on (towed, GPS drift
            # overnight) is not part of it
            if st.trip_id is not None and not trip_starts and st.lat is not None and st.lon is not None:
                st.trip_distance_km += haversine_km(st.lat, st.lon, lat, lon)
            st.lat, st.lon = lat, lon

        if speed is not None:
            if speed < self.stop_speed_kmh:
                if st.stopped_since_ns is None:
                    st.stopped_since_ns = t
            else:
                st.stopped_since_ns = None
            reading.fields["stop_dwell_s"] = (t - st.stopped_since_ns) / _NS if st.stopped_since_ns is not None else 0.0

        if st.trip_id is not None:
            reading.fields["trip_id"] = st.trip_id
            reading.fields["trip_distance_km"] = round(st.trip_distance_km, 4)

        off_s: float | None = None
        if st.ignition is False and st.ignition_off_since_ns is not None:
            off_s = (t - st.ignition_off_since_ns) / _NS
            reading.fields["ignition_off_s"] = off_s
        reading.fields["child_left_s"] = off_s if off_s is not None and (st.occupancy or 0) > 0 else 0.0
        st.time_ns = t

    def export_state(self) -> dict[str, Any]:
        return {device_id: asdict(st) for device_id, st in self._state.items()}

    def import_state(self, state: dict[str, Any]) -> None:
        names = {f.name for f in fields(BusState)}
        for device_id, entry in state.items():
            if not isinstance(entry, dict):
                continue
            try:
                restored = BusState(**{k: v for k, v in entry.items() if k in names})
            except TypeError:
                continue
            if restored.time_ns is None or (isinstance(restored.time_ns, int) and restorable(restored.time_ns)):
                self._state[str(device_id)] = restored
