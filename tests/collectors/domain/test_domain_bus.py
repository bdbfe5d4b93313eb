"""School bus: speed zones, over-speed, trips, stop dwell, ignition-off time, child left behind."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from collectors.domain.bus import BusEnricher, SpeedZones, haversine_km
from core.model import DeviceInfo, Reading

S = 1_000_000_000
T0 = 1_780_000_000 * S
DEVICE = DeviceInfo(device_id="bus-1", feed="bus", city="chiangmai", district="mueang")


def _square(lon0: float, lat0: float, lon1: float, lat1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]]}


ZONES_GEOJSON: dict[str, Any] = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "geometry": _square(98.90, 18.70, 99.10, 18.90),
         "properties": {"name": "Mueang municipality", "speed_limit_kmh": 50}},
        {"type": "Feature", "geometry": _square(98.95, 18.75, 99.00, 18.80),
         "properties": {"name": "School zone", "speed_limit_kmh": 30}},
        {"type": "Feature", "geometry": _square(98.99, 18.79, 99.05, 18.85),
         "properties": {"name": "Market zone", "speed_limit_kmh": 40}},
    ],
}
IN_SCHOOL_AND_MARKET = (18.795, 98.995)  # inside all three zones
IN_MARKET_ONLY = (18.82, 99.02)
IN_MUNICIPALITY_ONLY = (18.72, 98.92)
OUTSIDE = (18.50, 98.50)


def _reading(t_s: int, **fields: Any) -> Reading:
    return Reading("bus-1", "bus", "chiangmai", "mueang", T0 + t_s * S, dict(fields))


def test_haversine_meridian_arc() -> None:
    # Along a meridian the great-circle distance is R × Δφ: 0.01° at R = 6371.0088 km.
    assert haversine_km(18.0, 99.0, 18.01, 99.0) == pytest.approx(6371.0088 * math.radians(0.01), rel=1e-9)
    assert haversine_km(13.75, 100.5, 13.75, 100.5) == 0.0


def test_zone_lookup_smallest_limit_wins() -> None:
    zones = SpeedZones.from_geojson(ZONES_GEOJSON)
    hit = zones.lookup(*IN_SCHOOL_AND_MARKET)
    assert hit is not None and (hit.name, hit.speed_limit_kmh) == ("School zone", 30)
    hit = zones.lookup(*IN_MARKET_ONLY)
    assert hit is not None and hit.speed_limit_kmh == 40
    hit = zones.lookup(*IN_MUNICIPALITY_ONLY)
    assert hit is not None and hit.speed_limit_kmh == 50
    assert zones.lookup(*OUTSIDE) is None


def test_zone_boundary_counts_as_inside() -> None:
    zones = SpeedZones.from_geojson(ZONES_GEOJSON)
    hit = zones.lookup(18.75, 98.97)  # on the school zone's southern edge
    assert hit is not None and hit.speed_limit_kmh == 30


def test_zones_from_file_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps(ZONES_GEOJSON), encoding="utf-8")
    assert len(SpeedZones.from_file(path).zones) == 3
    with pytest.raises(ValueError):
        SpeedZones.from_geojson({"type": "Feature"})
    geometry = {"type": "Point", "coordinates": [99, 18]}
    point = {"type": "Feature", "geometry": geometry, "properties": {"speed_limit_kmh": 1}}
    bad = {"type": "FeatureCollection", "features": [point]}
    with pytest.raises(ValueError):
        SpeedZones.from_geojson(bad)


def test_speed_limit_fallbacks_and_over_speed() -> None:
    e = BusEnricher(zones=SpeedZones.from_geojson(ZONES_GEOJSON))
    r = _reading(0, lat=IN_SCHOOL_AND_MARKET[0], lon=IN_SCHOOL_AND_MARKET[1], speed_kmh=42.0)
    e.enrich(r, DEVICE)
    assert r.fields["speed_limit_kmh"] == 30.0
    assert r.fields["over_speed_kmh"] == pytest.approx(12.0)

    r = _reading(1, lat=OUTSIDE[0], lon=OUTSIDE[1], speed_kmh=55.0)
    e.enrich(r, DEVICE)
    assert r.fields["speed_limit_kmh"] == 60.0  # national default for municipal areas
    assert r.fields["over_speed_kmh"] == 0.0  # never negative

    site_dev = DeviceInfo(device_id="bus-2", feed="bus", city="c", district="d", site={"speed_limit_kmh": 45})
    r = Reading("bus-2", "bus", "c", "d", T0, {"lat": OUTSIDE[0], "lon": OUTSIDE[1], "speed_kmh": 50.0})
    e.enrich(r, site_dev)
    assert r.fields["speed_limit_kmh"] == 45.0 and r.fields["over_speed_kmh"] == pytest.approx(5.0)

    rural = DeviceInfo(device_id="bus-3", feed="bus", city="c", district="d", site={"road_class": "rural"})
    r = Reading("bus-3", "bus", "c", "d", T0, {"speed_kmh": 65.0})
    e.enrich(r, rural)
    assert r.fields["speed_limit_kmh"] == 70.0 and r.fields["over_speed_kmh"] == 0.0


def test_trip_from_ignition_with_distance() -> None:
    e = BusEnricher()
    readings = [
        _reading(0, ignition=True, lat=18.00, lon=99.0, speed_kmh=0.0),
        _reading(60, ignition=True, lat=18.01, lon=99.0, speed_kmh=40.0),
        _reading(120, lat=18.02, lon=99.0, speed_kmh=40.0),  # ignition not reported: still on
        _reading(180, ignition=False, lat=18.02, lon=99.0, speed_kmh=0.0),
    ]
    for r in readings:
        e.enrich(r, DEVICE)
    trip_ids = [r.fields.get("trip_id") for r in readings]
    assert trip_ids[0] is not None and trip_ids[0] == trip_ids[1] == trip_ids[2]
    assert trip_ids[3] is None  # the trip ended with the ignition
    assert readings[2].fields["trip_distance_km"] == pytest.approx(2 * 6371.0088 * math.radians(0.01), rel=1e-6)
    assert readings[3].fields["ignition_off_s"] == 0.0

    nxt = _reading(600, ignition=True, lat=18.02, lon=99.0)
    e.enrich(nxt, DEVICE)
    assert nxt.fields["trip_id"] not in (None, trip_ids[0])
    assert nxt.fields["trip_distance_km"] == 0.0
    assert "ignition_off_s" not in nxt.fields
    state = e.trip("bus-1")
    assert state is not None and state.trip_start_ns == T0 + 600 * S


def test_stop_dwell() -> None:
    e = BusEnricher()
    dwell = []
    for t, v in [(0, 20.0), (60, 2.0), (120, 1.0), (150, 0.0), (200, 10.0), (260, 2.9)]:
        r = _reading(t, ignition=True, speed_kmh=v)
        e.enrich(r, DEVICE)
        dwell.append(r.fields["stop_dwell_s"])
    # Stopped (below 3 km/h) from t=60 until t=200; 2.9 km/h counts as stopped again.
    assert dwell == [0.0, 0.0, 60.0, 90.0, 0.0, 0.0]


def test_child_left_behind() -> None:
    e = BusEnricher()
    seq = [
        (0, {"ignition": True, "occupancy": 12}),
        (100, {"ignition": False, "occupancy": 1}),  # engine off, one child still counted on board
        (400, {"occupancy": 1}),
        (700, {}),  # occupancy not reported: last known count (1) stands
        (800, {"occupancy": 0}),
        (900, {"occupancy": 2, "ignition": True}),
    ]
    child_left, off = [], []
    for t, f in seq:
        r = _reading(t, **f)
        e.enrich(r, DEVICE)
        child_left.append(r.fields["child_left_s"])
        off.append(r.fields.get("ignition_off_s"))
    assert child_left == [0.0, 0.0, 300.0, 600.0, 0.0, 0.0]
    assert off == [None, 0.0, 300.0, 600.0, 700.0, None]


def test_late_reading_does_not_reopen_trip() -> None:
    e = BusEnricher()
    e.enrich(_reading(0, ignition=True), DEVICE)
    e.enrich(_reading(100, ignition=False, occupancy=0), DEVICE)
    late = _reading(50, ignition=True, speed_kmh=80.0)
    e.enrich(late, DEVICE)
    assert "trip_id" not in late.fields
    assert late.fields["over_speed_kmh"] == pytest.approx(20.0)  # stateless fields still set
    after = _reading(160)
    e.enrich(after, DEVICE)
    assert after.fields["ignition_off_s"] == 60.0 and "trip_id" not in after.fields


def test_state_round_trip() -> None:
    a = BusEnricher()
    a.enrich(_reading(0, ignition=True, lat=18.0, lon=99.0), DEVICE)
    a.enrich(_reading(60, lat=18.01, lon=99.0), DEVICE)
    b = BusEnricher()
    b.import_state(json.loads(json.dumps(a.export_state())) | {"junk": [1], "bad": {"nope": 1, "ignition": True}})
    ra, rb = _reading(120, lat=18.02, lon=99.0), _reading(120, lat=18.02, lon=99.0)
    a.enrich(ra, DEVICE)
    b.enrich(rb, DEVICE)
    assert rb.fields == ra.fields
    assert rb.fields["trip_distance_km"] == pytest.approx(2 * 6371.0088 * math.radians(0.01), rel=1e-6)
