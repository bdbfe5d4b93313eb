"""School buses and vans: each working day a morning and an afternoon run (depot, stops, school) planned from
the seed, position, speed, door, ignition and occupancy along it; speeding and child-left incidents."""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nakhon.sim.city import LatLon
from nakhon.sim.feed import FeedSignals, SharedSignals
from nakhon.sim.localtime import BANGKOK_UTC_OFFSET_S, DAY_S, local_day

if TYPE_CHECKING:
    from nakhon.sim.city import SimDevice
    from nakhon.sim.incidents import Incident
    from nakhon.sim.localtime import LocalDay


@dataclass(slots=True)
class _Leg:
    """One phase of a bus's day: parked with engine idling, driving from a to b, or at a stop with the door open."""

    t0: float
    t1: float
    kind: str  # "idle" | "drive" | "stop"
    a: LatLon
    b: LatLon
    occ0: int
    occ1: int
    speed: float = 0.0
    heading: float = 0.0


@dataclass(slots=True)
class _BusDay:
    starts: list[float]
    legs: list[_Leg]
    parked_before: LatLon  # before the first leg
    heading: float = 0.0


def _distance_km(a: LatLon, b: LatLon) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def _bearing(a: LatLon, b: LatLon) -> float:
    lat1, lat2 = math.radians(a[0]), math.radians(b[0])
    dlon = math.radians(b[1] - a[1])
    x = math.sin(dlon) * math.cos(lat2)
    y = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(dlon)
    return round(math.degrees(math.atan2(x, y)) % 360.0, 1)


ROAD_FACTOR = 1.3  # road distance / straight-line distance between stops


class BusSignals(FeedSignals):
    """School buses and vans on their routes."""

    feed = "bus"
    out_of_range = (("lat", 91, 180), ("speed_kmh", 310, 999), ("heading_deg", 361, 720))

    def __init__(self, shared: SharedSignals) -> None:
        super().__init__(shared)
        self._bus_days: dict[tuple[str, int], _BusDay] = {}

    def day_plan(self, d: SimDevice, day: int) -> _BusDay:
        key = (d.device_id, day)
        plan = self._bus_days.get(key)
        if plan is not None:
            return plan
        ld = local_day(day)
        route = list(d.route) or [(d.lat, d.lon), (d.lat, d.lon)]
        depot, school = route[0], route[-1]
        legs: list[_Leg] = []
        if ld.workday:
            r = random.Random(f"busday:{self.shared.seed}:{d.device_id}:{day}")
            capacity = 14 if d.kind == "van" else 40
            stops = route[1:-1]
            boarding = [r.randint(2, 5) if d.kind == "van" else r.randint(4, 10) for _ in stops]
            while sum(boarding) > capacity:
                boarding[boarding.index(max(boarding))] -= 1
            # Morning run: depot -> stops (children board) -> school (all alight), before 08:30.
            t = ld.start_s + r.uniform(6.1, 6.75) * 3600
            t = self._leg(legs, t, "idle", depot, depot, 0, 0, 180)
            occ = 0
            points = [depot, *stops, school]
            for i in range(1, len(points)):
                t = self._drive(legs, t, points[i - 1], points[i], occ, r)
                if i < len(points) - 1:
                    t = self._leg(legs, t, "stop", points[i], points[i], occ, occ + boarding[i - 1], r.uniform(40, 120))
                    occ += boarding[i - 1]
            t = self._leg(legs, t, "stop", school, school, occ, 0, r.uniform(120, 240))
            # Afternoon run: school (all board) -> stops in reverse (children alight) -> depot, before 17:30.
            t = ld.start_s + r.uniform(15.3, 15.9) * 3600
            t = self._leg(legs, t, "stop", school, school, 0, occ, 300)
            t = self._leg(legs, t, "idle", school, school, occ, occ, 60)
            back = [school, *reversed(stops), depot]
            for i in range(1, len(back)):
                t = self._drive(legs, t, back[i - 1], back[i], occ, r)
                if i < len(back) - 1:
                    alight = boarding[len(stops) - i]
                    t = self._leg(legs, t, "stop", back[i], back[i], occ, occ - alight, r.uniform(40, 120))
                    occ -= alight
            self._leg(legs, t, "idle", depot, depot, 0, 0, 120)
        heading = _bearing(depot, school)
        plan = _BusDay([leg.t0 for leg in legs], legs, depot, heading)
        if len(self._bus_days) > 20_000:
            self._bus_days.clear()
        self._bus_days[key] = plan
        return plan

    @staticmethod
    def _leg(legs: list[_Leg], t: float, kind: str, a: LatLon, b: LatLon, occ0: int, occ1: int, dur: float) -> float:
        heading = legs[-1].heading if legs else 0.0
        legs.append(_Leg(t, t + dur, kind, a, b, occ0, occ1, 0.0, heading))
        return t + dur

    @staticmethod
    def _drive(legs: list[_Leg], t: float, a: LatLon, b: LatLon, occ: int, r: random.Random) -> float:
        speed = r.uniform(25, 50)
        dur = _distance_km(a, b) * ROAD_FACTOR / speed * 3600
        legs.append(_Leg(t, t + dur, "drive", a, b, occ, occ, speed, _bearing(a, b)))
        return t + dur

    def state(self, d: SimDevice, t_s: float) -> dict[str, Any]:
        """Where the bus is and what it does at `t_s` (no noise): the plan of its Bangkok day."""
        day = int((t_s + BANGKOK_UTC_OFFSET_S) // DAY_S)
        plan = self.day_plan(d, day)
        i = bisect.bisect_right(plan.starts, t_s) - 1
        if i < 0 or not plan.legs:
            # Before the morning run: parked at the depot (where yesterday's afternoon run ended).
            return {"pos": plan.parked_before, "speed": 0.0, "ignition": False, "door": False, "occ": 0,
                    "heading": plan.heading, "moving": False}  # fmt: skip
        leg = plan.legs[i]
        if t_s >= leg.t1:  # between legs: parked with the engine off where the last leg ended
            return {"pos": leg.b, "speed": 0.0, "ignition": False, "door": False, "occ": leg.occ1,
                    "heading": leg.heading, "moving": False}  # fmt: skip
        f = (t_s - leg.t0) / (leg.t1 - leg.t0) if leg.t1 > leg.t0 else 1.0
        if leg.kind == "drive":
            pos = (leg.a[0] + (leg.b[0] - leg.a[0]) * f, leg.a[1] + (leg.b[1] - leg.a[1]) * f)
            return {"pos": pos, "speed": leg.speed, "ignition": True, "door": False, "occ": leg.occ0,
                    "heading": leg.heading, "moving": True}  # fmt: skip
        occ = round(leg.occ0 + (leg.occ1 - leg.occ0) * f)
        return {"pos": leg.a, "speed": 0.0, "ignition": True, "door": leg.kind == "stop", "occ": occ,
                "heading": leg.heading, "moving": False}  # fmt: skip

    def reading(
        self, d: SimDevice, ts_ms: int, day: LocalDay, hour: float, rng: random.Random, incidents: list[Incident]
    ) -> dict[str, Any]:
        t_s = ts_ms / 1000
        state = self.state(d, t_s)
        lat, lon = state["pos"]
        speed = state["speed"]
        heading = state["heading"]
        if state["moving"]:
            speed = min(60.0, max(20.0, speed * (1 + 0.12 * math.sin(t_s / 14.0)) + 1.5 * rng.gauss(0, 1)))
            lat += 0.00002 * rng.gauss(0, 1)
            lon += 0.00002 * rng.gauss(0, 1)
        ignition, door, occ = state["ignition"], state["door"], state["occ"]
        for incident in incidents:
            if incident.kind == "speeding":
                # On the highway between towns: moving along the route's line at 75–95 km/h.
                speed = min(95.0, max(75.0, incident.magnitude + 3 * math.sin(t_s / 20.0) + rng.gauss(0, 1)))
                route = list(d.route) or [(d.lat, d.lon), (d.lat + 0.05, d.lon)]
                a, b = route[0], route[-1]
                span = max(0.1, _distance_km(a, b))
                travelled = incident.magnitude * (t_s - incident.start_ms / 1000) / 3600
                f = (travelled % (2 * span)) / span
                f = f if f <= 1 else 2 - f
                lat, lon = a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f
                heading = _bearing(a, b)
                ignition, door = True, False
            elif incident.kind == "child_left":
                # Parked, engine off, door closed — and a child still on board.
                parked = self.state(d, incident.start_ms / 1000)
                lat, lon = parked["pos"]
                speed, ignition, door, occ = 0.0, False, False, max(1, int(incident.magnitude))
                heading = parked["heading"]
        return {
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed_kmh": round(max(0.0, speed), 1),
            "heading_deg": round(heading % 360.0, 1),
            "ignition": bool(ignition),
            "door_open": bool(door),
            "occupancy": int(occ),
        }


__all__ = ["ROAD_FACTOR", "BusSignals"]
