"""Realistic signals for the simulated city, in Asia/Bangkok time, plus incidents and malformed messages.

`Simulation` turns (device, simulated time) into one canonical message: a JSON object with `ts` (epoch ms)
and exactly the feed schema's field names and types. It is deterministic: the same devices, seed, incidents
and sequence of calls give the same messages. State kept between calls: the energy registers (integrated
from the power profile), the rain gauges' "since the last report" totals and the per-device random streams.

Asia/Bangkok is UTC+7 all year (no daylight saving), so local time is computed with a fixed offset (core.time).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from core.time import BANGKOK_UTC_OFFSET_S, is_thai_holiday
from nakhon.sim.city import LatLon, SimDevice

DAY_S = 86_400
DRY_SEASON_MONTHS = frozenset({12, 1, 2, 3, 4})  # north-east monsoon + hot season: haze
WET_SEASON_MONTHS = frozenset({5, 6, 7, 8, 9, 10})  # south-west monsoon: afternoon showers



# --------------------------------------------------------------------------------------------------- time


@dataclass(frozen=True, slots=True)
class LocalDay:
    """A calendar day in Asia/Bangkok: `day` is days since 1970-01-01 (local), `start_s` its UTC epoch second."""

    day: int
    start_s: int
    weekday: int  # Monday = 0
    month: int
    holiday: bool

    @property
    def workday(self) -> bool:
        return self.weekday < 5 and not self.holiday

    @property
    def dry(self) -> bool:
        return self.month in DRY_SEASON_MONTHS

    @property
    def wet(self) -> bool:
        return self.month in WET_SEASON_MONTHS


@lru_cache(maxsize=4096)
def local_day(day: int) -> LocalDay:
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    holiday = is_thai_holiday(date)  # Thai public holidays are non-working days (energy profiles, school runs)
    return LocalDay(day, day * DAY_S - BANGKOK_UTC_OFFSET_S, date.weekday(), date.month, holiday)


def bangkok(ts_ms: int) -> tuple[LocalDay, float]:
    """The Bangkok calendar day of `ts_ms` and the local hour of day (0 ≤ hour < 24, fractional)."""
    local_s = ts_ms / 1000 + BANGKOK_UTC_OFFSET_S
    day = int(local_s // DAY_S)
    return local_day(day), (local_s - day * DAY_S) / 3600


def bangkok_ms(year: int, month: int, day: int, hour: float = 0.0) -> int:
    """Epoch ms of a Bangkok local date and hour (for tests and demos)."""
    days = (dt.date(year, month, day) - dt.date(1970, 1, 1)).days
    return int((days * DAY_S - BANGKOK_UTC_OFFSET_S + hour * 3600) * 1000)


def _profile(table: tuple[float, ...], hour: float) -> float:
    """Linear interpolation in a 24-value hourly table (value at hh:00), wrapping at midnight."""
    i = int(hour) % 24
    f = hour - int(hour)
    return table[i] * (1 - f) + table[(i + 1) % 24] * f


def _temperature_shape(hour: float) -> float:
    """-1 at 06:00 (coolest), +1 at 14:30 (hottest), cosine in between."""
    if 6.0 <= hour < 14.5:
        return -math.cos(math.pi * (hour - 6.0) / 8.5)
    return math.cos(math.pi * ((hour - 14.5) % 24) / 15.5)


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
_RAIN_DAY_P = {1: 0.05, 2: 0.07, 3: 0.1, 4: 0.22, 5: 0.5, 6: 0.55, 7: 0.55, 8: 0.6, 9: 0.7, 10: 0.65, 11: 0.25,
               12: 0.06}  # fmt: skip
_AIR_KIND_PM = {"roadside": 1.15, "residential": 0.95, "industrial": 1.25, "port": 1.3}
_AIR_KIND_TRAFFIC = {"roadside": 1.4, "residential": 0.7, "industrial": 1.0, "port": 1.2}


# --------------------------------------------------------------------------------------------------- incidents

INCIDENT_KINDS: tuple[str, ...] = ("haze", "canal_rise", "speeding", "meter_spike", "child_left")
INCIDENT_FEED = {"haze": "air", "canal_rise": "flood", "speeding": "bus", "meter_spike": "energy", "child_left": "bus"}
# Natural durations in simulated time; shortened (never lengthened) to fit a short run.
INCIDENT_DURATION_S = {"haze": 3 * 3600, "canal_rise": 4 * 3600, "speeding": 6 * 60, "meter_spike": 15 * 60,
                       "child_left": 20 * 60}  # fmt: skip
# Where each incident starts inside a round of the run (fraction of the round) and its share of the round at most.
_INCIDENT_SLOT = {"haze": (0.05, 0.5), "canal_rise": (0.2, 0.4), "speeding": (0.4, 0.2), "meter_spike": (0.55, 0.2),
                  "child_left": (0.7, 0.25)}  # fmt: skip
CANAL_RISE_M_PER_S = 0.15 / 600  # ~15 cm per 10 min
MALFORMED_KINDS: tuple[str, ...] = ("wrong_type", "out_of_range", "unknown_device")


@dataclass(frozen=True, slots=True)
class Incident:
    """Something worth an alert, in simulated time [start_ms, end_ms) on `device_ids`.

    `magnitude`: haze — target PM2.5 µg/m³; speeding — km/h; meter_spike — multiple of contracted kW;
    canal_rise — peak level above the bank, m; child_left — children left on board.
    """

    kind: str
    start_ms: int
    end_ms: int
    device_ids: tuple[str, ...]
    district: str = ""
    magnitude: float = 0.0

    def active(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.end_ms

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


def make_incident(
    kind: str,
    devices: list[SimDevice],
    start_ms: int,
    *,
    duration_s: float | None = None,
    device_id: str | None = None,
    district: str | None = None,
    rng: random.Random | None = None,
) -> Incident | None:
    """One incident of `kind` starting at `start_ms` on a chosen (or the given) device or district.

    Returns None when the devices include none of the incident's feed.
    """
    if kind not in INCIDENT_KINDS:
        raise ValueError(f"unknown incident {kind!r}; known: {', '.join(INCIDENT_KINDS)}")
    rng = rng or random.Random(f"incident:{kind}:{start_ms}:{device_id}:{district}")
    feed = INCIDENT_FEED[kind]
    pool = [d for d in devices if d.feed == feed]
    if device_id is not None:
        pool = [d for d in pool if d.device_id == device_id]
        if not pool:
            raise ValueError(f"no {feed} device {device_id!r} for incident {kind}")
    elif district is not None:
        pool = [d for d in pool if d.district == district] or pool
    if not pool:
        return None
    duration = INCIDENT_DURATION_S[kind] if duration_s is None else duration_s
    end_ms = start_ms + int(duration * 1000)
    if kind == "haze":
        chosen = district if district and device_id is None else rng.choice(pool).district
        ids = tuple(d.device_id for d in pool if d.district == chosen)
        return Incident(kind, start_ms, end_ms, ids, chosen, round(rng.uniform(95, 140), 1))
    target = rng.choice(pool)
    magnitude = {"canal_rise": rng.uniform(0.12, 0.3), "speeding": rng.uniform(78, 92),
                 "meter_spike": 3.0, "child_left": 1.0}[kind]  # fmt: skip
    return Incident(kind, start_ms, end_ms, (target.device_id,), target.district, round(magnitude, 2))


def schedule_incidents(
    devices: list[SimDevice], start_ms: int, span_ms: int, *, seed: int = 1, kinds: Iterable[str] = INCIDENT_KINDS
) -> list[Incident]:
    """Every incident kind once per simulated day of the run (at least once), at fixed places in each round.

    Durations are the natural ones (haze 3 h, canal 4 h, speeding 6 min, meter spike 15 min, child left 20 min),
    shortened to fit a run shorter than a day: choose `--speed` so the run covers a few hours to see them whole.
    """
    rng = random.Random(f"incidents:{seed}")
    rounds = max(1, span_ms // (DAY_S * 1000))
    round_ms = span_ms / rounds
    out: list[Incident] = []
    for r in range(rounds):
        base = start_ms + r * round_ms
        for kind in kinds:
            at, share = _INCIDENT_SLOT[kind]
            duration = min(INCIDENT_DURATION_S[kind], share * round_ms / 1000)
            if duration <= 0:
                continue
            incident = make_incident(kind, devices, int(base + at * round_ms), duration_s=duration, rng=rng)
            if incident is None:
                continue
            if kind in ("speeding", "child_left"):
                incident = _align_bus_incident(incident, devices, seed, int(base), int(base + round_ms))
            out.append(incident)
    return out


def _align_bus_incident(
    incident: Incident, devices: list[SimDevice], seed: int, round_start_ms: int, round_end_ms: int
) -> Incident:
    """Move a bus incident to where it belongs when the run has room: speeding while the bus is driving a
    school run, child left when the engine is switched off at the end of a run (the first such moment after
    the planned start, else the first in the round). Unchanged when the round has no such moment."""
    device = next(d for d in devices if d.device_id == incident.device_ids[0])
    probe = Simulation([device], seed=seed)
    length = incident.end_ms - incident.start_ms
    step = 30_000
    for begin, end in ((incident.start_ms, round_end_ms - length), (round_start_ms, incident.start_ms)):
        previous = probe._bus_state(device, begin / 1000)
        for t in range(begin + step, end, step):
            state = probe._bus_state(device, t / 1000)
            speeding = incident.kind == "speeding" and state["moving"]
            switched_off = incident.kind == "child_left" and previous["ignition"] and not state["ignition"]
            if speeding or switched_off:
                return Incident(
                    incident.kind, t, t + length, incident.device_ids, incident.district, incident.magnitude
                )
            previous = state
    return incident


# --------------------------------------------------------------------------------------------------- messages


@dataclass(slots=True)
class SimMessage:
    """One message: its topic, the device named in it, the simulated time and the JSON object."""

    topic: str
    device_id: str
    feed: str
    ts_ms: int
    payload: dict[str, Any]
    malformed: str | None = None  # None, or one of MALFORMED_KINDS

    def encode(self) -> bytes:
        return orjson.dumps(self.payload)


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


@dataclass(slots=True)
class _Meter:
    ts_ms: int
    kwh: float
    power_kw: float


@dataclass(slots=True)
class _Shower:
    start_s: float
    end_s: float
    mm_per_h: float


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


class Simulation:
    """Signals for `devices`: `reading(device, ts)` gives the canonical fields, `next_message(ts)` a message.

    `malformed_rate` (0–1) is the exact long-run fraction of messages that are malformed: message k (1-based) is
    malformed when ⌊k·rate⌋ grows, so after N messages ⌊N·rate⌋ are. Kinds: a wrong JSON type, a value out of the
    schema's range, or a valid payload from a device that is not registered.
    """

    def __init__(
        self,
        devices: list[SimDevice],
        *,
        seed: int = 1,
        malformed_rate: float = 0.0,
        incidents: Iterable[Incident] = (),
        nominal_voltage_v: float = 230.0,
    ) -> None:
        if not 0.0 <= malformed_rate <= 1.0:
            raise ValueError("malformed_rate must be within 0–1")
        self.devices = list(devices)
        self.seed = seed
        self.malformed_rate = malformed_rate
        self.nominal_voltage_v = nominal_voltage_v
        self.incidents: list[Incident] = []
        self._by_device: dict[str, list[Incident]] = {}
        for incident in incidents:
            self.add_incident(incident)
        self._order = self._interleave(self.devices)
        self._next = 0
        self._round = 0
        self._sent = 0
        self._malformed = 0
        self._rng_malformed = random.Random(f"malformed:{seed}")
        self._rngs: dict[str, random.Random] = {}
        self._last_ts: dict[str, int] = {}
        self._meters: dict[str, _Meter] = {}
        self._rain_last: dict[str, int] = {}
        self._bus_days: dict[tuple[str, int], _BusDay] = {}
        self._showers: dict[tuple[str, int], list[_Shower]] = {}
        self._dev_params: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ public API

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def malformed(self) -> int:
        return self._malformed

    def add_incident(self, incident: Incident) -> Incident:
        self.incidents.append(incident)
        for device_id in incident.device_ids:
            self._by_device.setdefault(device_id, []).append(incident)
        return incident

    def trigger(
        self,
        kind: str,
        at_ms: int,
        *,
        duration_s: float | None = None,
        device_id: str | None = None,
        district: str | None = None,
    ) -> Incident:
        """Start an incident now (`at_ms`, simulated time) on a chosen or given device / district."""
        incident = make_incident(
            kind, self.devices, at_ms, duration_s=duration_s, device_id=device_id, district=district,
            rng=random.Random(f"trigger:{self.seed}:{kind}:{at_ms}:{len(self.incidents)}"),
        )  # fmt: skip
        if incident is None:
            raise ValueError(f"no {INCIDENT_FEED[kind]} devices for incident {kind}")
        return self.add_incident(incident)

    def reading(self, device: SimDevice, ts_ms: int) -> dict[str, Any]:
        """The canonical fields of `device` at simulated time `ts_ms` (no `ts`), incidents applied."""
        day, hour = bangkok(ts_ms)
        rng = self._rng(device.device_id)
        incidents = [i for i in self._by_device.get(device.device_id, ()) if i.active(ts_ms)]
        if device.feed == "air":
            return self._air(device, ts_ms, day, hour, rng, incidents)
        if device.feed == "flood":
            return self._flood(device, ts_ms, day, hour, rng, incidents)
        if device.feed == "energy":
            return self._energy(device, ts_ms, day, hour, rng, incidents)
        if device.feed == "bus":
            return self._bus(device, ts_ms, rng, incidents)
        raise ValueError(f"unknown feed {device.feed!r}")

    def message(self, device: SimDevice, ts_ms: int) -> SimMessage:
        """A message of `device` at `ts_ms` (made strictly increasing per device); may be malformed."""
        last = self._last_ts.get(device.device_id)
        if last is not None and ts_ms <= last:
            ts_ms = last + 1
        self._last_ts[device.device_id] = ts_ms
        payload: dict[str, Any] = {"ts": ts_ms}
        payload.update(self.reading(device, ts_ms))
        self._sent += 1
        if self.malformed_rate and int(self._sent * self.malformed_rate + 1e-9) > self._malformed:
            self._malformed += 1
            return self._malform(device, ts_ms, payload)
        return SimMessage(device.topic, device.device_id, device.feed, ts_ms, payload)

    def next_message(self, ts_ms: int) -> SimMessage:
        """The next device in round-robin order (feeds interleaved) reports at `ts_ms`."""
        n = len(self._order)
        # Each round starts one device later than the one before: every device still reports once per round,
        # but the every-k-th malformed message falls on a different device each round (with 200 devices and
        # 1 % malformed, messages 100 and 200 of every round were always the same two devices — which then
        # never sent one good reading and were, truly, silent).
        device = self._order[(self._next + self._round) % n]
        self._next += 1
        if self._next == n:
            self._next, self._round = 0, self._round + 1
        return self.message(device, ts_ms)

    def messages(self, count: int, start_ms: int, interval_ms: float) -> Iterator[SimMessage]:
        """`count` messages, one every `interval_ms` of simulated time, round-robin over the devices."""
        for i in range(count):
            yield self.next_message(int(start_ms + i * interval_ms))

    def normal_canal_level(self, device: SimDevice, ts_ms: int) -> float:
        """The gauge's level without incidents or noise (m, site datum)."""
        ground = float(device.site.get("ground_level_m", 0.0))
        bank = float(device.site.get("bank_level_m", ground + 2.0))
        depth = bank - ground
        p = self._params(device)
        day, _hour = bangkok(ts_ms)
        t_s = ts_ms / 1000
        tidal = 1.0 if device.kind == "tidal" else 0.35
        tide = tidal * (
            0.35 * math.sin(2 * math.pi * t_s / (23.93 * 3600) + p["phase1"])
            + 0.2 * math.sin(2 * math.pi * t_s / (12.42 * 3600) + p["phase2"])
        )
        base = depth * (p["fill"] + (0.08 if day.wet else 0.0))
        rain = self._rain_response(device.district, t_s, depth)
        return min(ground + 0.85 * depth, max(ground + 0.05, ground + base + tide + rain))

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _interleave(devices: list[SimDevice]) -> list[SimDevice]:
        by_feed: dict[str, list[SimDevice]] = {}
        for d in devices:
            by_feed.setdefault(d.feed, []).append(d)
        order: list[SimDevice] = []
        queues = list(by_feed.values())
        longest = max((len(q) for q in queues), default=0)
        for i in range(longest):
            order.extend(q[i] for q in queues if i < len(q))
        return order

    def _rng(self, device_id: str) -> random.Random:
        rng = self._rngs.get(device_id)
        if rng is None:
            rng = self._rngs[device_id] = random.Random(f"signal:{self.seed}:{device_id}")
        return rng

    def _params(self, device: SimDevice) -> dict[str, float]:
        """Fixed per-device parameters (phases, offsets) derived from the seed and the device id."""
        params = self._dev_params.get(device.device_id)
        if params is None:
            r = random.Random(f"params:{self.seed}:{device.device_id}")
            params = {
                "phase1": r.uniform(0, 2 * math.pi),
                "phase2": r.uniform(0, 2 * math.pi),
                "fill": r.uniform(0.3, 0.45),
                "battery": r.uniform(72, 94),
                "v_offset": r.uniform(-3.0, 3.0),
                "pf": r.uniform(0.9, 0.96) if device.kind != "industrial" else r.uniform(0.89, 0.93),
                "load": r.uniform(0.85, 1.1),
                "kwh0": float(device.site.get("contracted_kw", 100.0)) * r.uniform(0.3, 0.5) * 8760 * r.uniform(1, 8),
                "pm": r.uniform(0.9, 1.1),
            }
            self._dev_params[device.device_id] = params
        return params

    def _day_factor(self, district: str, day: int) -> float:
        """A day-to-day (weather) factor for air pollution in a district, 0.75–1.3."""
        r = random.Random(f"dayf:{self.seed}:{district}:{day}")
        return r.uniform(0.75, 1.3)

    def _day_showers(self, district: str, day: int) -> list[_Shower]:
        key = (district, day)
        showers = self._showers.get(key)
        if showers is None:
            ld = local_day(day)
            r = random.Random(f"rain:{self.seed}:{district}:{day}")
            showers = []
            if r.random() < _RAIN_DAY_P[ld.month]:
                # Convective showers: mostly afternoon / early evening, sometimes a second one at night.
                start_h = r.uniform(13.5, 18.5)
                showers.append(self._shower(ld, start_h, r))
                if r.random() < 0.2:
                    showers.append(self._shower(ld, r.uniform(0.5, 5.0), r))
            if len(self._showers) > 10_000:
                self._showers.clear()
            self._showers[key] = showers
        return showers

    @staticmethod
    def _shower(ld: LocalDay, start_h: float, r: random.Random) -> _Shower:
        start = ld.start_s + start_h * 3600
        return _Shower(start, start + r.uniform(0.5, 2.5) * 3600, r.uniform(4, 35))

    def _showers_around(self, district: str, t_s: float, days_back: int) -> Iterator[_Shower]:
        day = int((t_s + BANGKOK_UTC_OFFSET_S) // DAY_S)
        for d in range(day - days_back, day + 1):
            yield from self._day_showers(district, d)

    def _rain_intensity(self, district: str, t_s: float) -> float:
        return sum(s.mm_per_h for s in self._showers_around(district, t_s, 1) if s.start_s <= t_s < s.end_s)

    def _rain_between(self, district: str, a_s: float, b_s: float) -> float:
        """Rain (mm) that fell in the district during [a_s, b_s)."""
        if b_s <= a_s:
            return 0.0
        total = 0.0
        day_a = int((a_s + BANGKOK_UTC_OFFSET_S) // DAY_S)
        day_b = int((b_s + BANGKOK_UTC_OFFSET_S) // DAY_S)
        for d in range(day_a - 1, day_b + 1):
            for s in self._day_showers(district, d):
                overlap = min(b_s, s.end_s) - max(a_s, s.start_s)
                if overlap > 0:
                    total += s.mm_per_h * overlap / 3600
        return total

    def _rain_response(self, district: str, t_s: float, depth: float) -> float:
        """Canal rise from recent rain: grows while it rains, then drains away (time constant 8 h)."""
        k = 0.012 * depth / 2.2  # m per mm
        rise = 0.0
        for s in self._showers_around(district, t_s, 2):
            if t_s <= s.start_s:
                continue
            fallen = s.mm_per_h * (min(t_s, s.end_s) - s.start_s) / 3600
            decay = math.exp(-(t_s - s.end_s) / (8 * 3600)) if t_s > s.end_s else 1.0
            rise += k * fallen * decay
        return rise

    # ------------------------------------------------------------------ air

    def _air(
        self, d: SimDevice, ts_ms: int, day: LocalDay, hour: float, rng: random.Random, incidents: list[Incident]
    ) -> dict[str, Any]:
        p = self._params(d)
        dayf = self._day_factor(d.district, day.day)
        raining = self._rain_intensity(d.district, ts_ms / 1000) > 0
        washout = 0.6 if raining else 1.0
        raw = 21.0 * _PM_SEASON[day.month] * _profile(_PM_DIURNAL, hour) * _AIR_KIND_PM.get(d.kind, 1.0)
        raw *= dayf * p["pm"] * washout * (1 + 0.06 * rng.gauss(0, 1))
        # A coastal town with a sea breeze: outside haze episodes PM2.5 stays in the PCD yellow band at most
        # (≤ 37.5 µg/m³, AQI ≤ 100), so an orange or red AQI in the simulation is an incident, never the weather.
        pm25 = raw if raw < 30 else 30 + 7.4 * math.tanh((raw - 30) / 7.4)
        traffic = _profile(_TRAFFIC, hour) * _AIR_KIND_TRAFFIC.get(d.kind, 1.0)
        ozone_peak = 38.0 + (18.0 if day.dry else 0.0)
        o3 = 6.0 + ozone_peak * math.exp(-(((hour - 14.5) / 3.2) ** 2)) - 4.0 * traffic + 2.0 * rng.gauss(0, 1)
        shape = _temperature_shape(hour)
        temperature = _TEMP_MEAN[day.month] + (4.0 if day.dry else 3.4) * shape + 0.3 * rng.gauss(0, 1)
        humidity = 72.0 - 15.0 * shape + (7.0 if day.wet else -3.0) + 1.5 * rng.gauss(0, 1)
        if raining:
            temperature -= 2.5
            humidity += 12.0
        industrial = d.kind in ("industrial", "port")
        for incident in incidents:
            if incident.kind == "haze":
                ramp = min(1.0, (ts_ms - incident.start_ms) / max(1.0, 0.05 * (incident.end_ms - incident.start_ms)))
                target = incident.magnitude * (0.85 + 0.15 * _profile(_PM_DIURNAL, hour)) + 3 * rng.gauss(0, 1)
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

    # ------------------------------------------------------------------ flood

    def _flood(
        self, d: SimDevice, ts_ms: int, day: LocalDay, hour: float, rng: random.Random, incidents: list[Incident]
    ) -> dict[str, Any]:
        p = self._params(d)
        t_s = ts_ms / 1000
        level = self.normal_canal_level(d, ts_ms)
        last = self._rain_last.get(d.device_id)
        self._rain_last[d.device_id] = ts_ms
        rain = self._rain_between(d.district, last / 1000, t_s) if last is not None else 0.0
        for incident in self._by_device.get(d.device_id, ()):
            # The rise and the recession after it (same rate) also apply after the incident window ends.
            extra = self._canal_extra(d, incident, ts_ms)
            level += extra
            if incident.active(ts_ms) and last is not None:
                a = max(last / 1000, incident.start_ms / 1000)
                rain += 45.0 * max(0.0, t_s - a) / 3600  # a heavy storm over the catchment
        level += 0.004 * rng.gauss(0, 1)
        solar = max(0.0, math.sin(math.pi * (hour - 7) / 11)) if 7 <= hour <= 18 else 0.0
        battery = p["battery"] + 5.0 * solar - 2.0 + 0.3 * rng.gauss(0, 1)
        return {
            "level_m": round(level, 3),
            "rain_mm": round(min(500.0, rain), 1),
            "battery_pct": round(min(100.0, max(0.0, battery)), 1),
        }

    def _canal_extra(self, d: SimDevice, incident: Incident, ts_ms: int) -> float:
        if incident.kind != "canal_rise" or ts_ms < incident.start_ms:
            return 0.0
        bank = float(d.site.get("bank_level_m", 2.0))
        peak = bank + incident.magnitude
        start_level = self.normal_canal_level(d, incident.start_ms)
        needed = max(0.0, peak - start_level)
        duration_s = incident.duration_s
        # ~15 cm / 10 min; faster only when the incident was shortened to fit a short run.
        rise_s = min(needed / CANAL_RISE_M_PER_S, 0.6 * duration_s)
        rate = needed / rise_s if rise_s > 0 else 0.0
        elapsed = (ts_ms - incident.start_ms) / 1000
        if elapsed < rise_s:
            target = start_level + rate * elapsed
        elif ts_ms < incident.end_ms:
            target = peak
        else:
            target = peak - rate * (ts_ms - incident.end_ms) / 1000
        return max(0.0, target - self.normal_canal_level(d, ts_ms))

    # ------------------------------------------------------------------ energy

    @staticmethod
    def _load_fraction(kind: str, day: LocalDay, hour: float, raining: bool) -> float:
        """Share of the contracted demand drawn at this hour, by site kind."""
        work = day.workday
        if kind == "office":
            if not work:
                return 0.14
            return _profile((0.14, 0.14, 0.14, 0.14, 0.14, 0.14, 0.18, 0.35, 0.6, 0.68, 0.7, 0.7,
                             0.58, 0.7, 0.72, 0.72, 0.68, 0.5, 0.35, 0.3, 0.28, 0.25, 0.18, 0.15), hour)  # fmt: skip
        if kind == "industrial":
            if not work:
                return 0.5 if day.weekday == 5 else 0.35
            return _profile((0.45, 0.45, 0.45, 0.45, 0.45, 0.45, 0.5, 0.62, 0.75, 0.86, 0.88, 0.88,
                             0.8, 0.88, 0.88, 0.88, 0.86, 0.85, 0.85, 0.84, 0.84, 0.82, 0.6, 0.46), hour)  # fmt: skip
        if kind == "school":
            if not work or day.month == 4:  # April: school holidays
                return 0.07
            return _profile((0.07, 0.07, 0.07, 0.07, 0.07, 0.07, 0.1, 0.3, 0.55, 0.6, 0.62, 0.62,
                             0.5, 0.6, 0.62, 0.55, 0.35, 0.15, 0.1, 0.08, 0.08, 0.07, 0.07, 0.07), hour)  # fmt: skip
        if kind == "hospital":
            return 0.5 + 0.2 * max(0.0, math.sin(math.pi * (hour - 7) / 14)) if 7 <= hour <= 21 else 0.5
        if kind == "pump":
            base = 0.55 if hour >= 22 or hour < 5 else 0.12  # water supply pumped off-peak
            return min(0.95, base + (0.7 if raining else 0.0))  # drainage during rain
        if kind == "street_lighting":
            return 0.95 if hour >= 18.5 or hour < 6.0 else 0.02
        return 0.4

    def _energy(
        self, d: SimDevice, ts_ms: int, day: LocalDay, hour: float, rng: random.Random, incidents: list[Incident]
    ) -> dict[str, Any]:
        p = self._params(d)
        contracted = float(d.site.get("contracted_kw", 100.0))
        raining = d.kind == "pump" and self._rain_intensity(d.district, ts_ms / 1000) > 0
        frac = self._load_fraction(d.kind, day, hour, raining)
        if d.kind in ("office", "school", "hospital") and frac > 0.3:
            frac += 0.06 * _temperature_shape(hour)  # air conditioning follows the afternoon heat
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

    # ------------------------------------------------------------------ bus

    def _bus_day(self, d: SimDevice, day: int) -> _BusDay:
        key = (d.device_id, day)
        plan = self._bus_days.get(key)
        if plan is not None:
            return plan
        ld = local_day(day)
        route = list(d.route) or [(d.lat, d.lon), (d.lat, d.lon)]
        depot, school = route[0], route[-1]
        legs: list[_Leg] = []
        if ld.workday:
            r = random.Random(f"busday:{self.seed}:{d.device_id}:{day}")
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

    def _bus_state(self, d: SimDevice, t_s: float) -> dict[str, Any]:
        """Where the bus is and what it does at `t_s` (no noise): the plan of its Bangkok day."""
        day = int((t_s + BANGKOK_UTC_OFFSET_S) // DAY_S)
        plan = self._bus_day(d, day)
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

    def _bus(self, d: SimDevice, ts_ms: int, rng: random.Random, incidents: list[Incident]) -> dict[str, Any]:
        t_s = ts_ms / 1000
        state = self._bus_state(d, t_s)
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
                parked = self._bus_state(d, incident.start_ms / 1000)
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

    # ------------------------------------------------------------------ malformed

    def _malform(self, device: SimDevice, ts_ms: int, payload: dict[str, Any]) -> SimMessage:
        r = self._rng_malformed
        kind = r.choices(MALFORMED_KINDS, weights=(0.4, 0.4, 0.2))[0]
        if kind == "unknown_device":
            ghost = f"{device.device_id.rsplit('-', 1)[0]}-ghost-{r.randint(900, 999)}"
            topic = f"city/{device.city}/{device.feed}/{ghost}"
            return SimMessage(topic, ghost, device.feed, ts_ms, payload, kind)
        bad = dict(payload)
        if kind == "wrong_type":
            name = r.choice([k for k in payload if k != "ts"])
            value = payload[name]
            # A bool as "on"/"off", a number as a string: what vendor payloads do before a profile maps them.
            bad[name] = ("on" if value else "off") if isinstance(value, bool) else str(value)
        else:
            name, lo, hi = r.choice(_OUT_OF_RANGE_BY_FEED[device.feed])
            bad[name] = round(r.uniform(lo, hi), 2)
        return SimMessage(device.topic, device.device_id, device.feed, ts_ms, bad, kind)


# Values outside each schema's range (field, low, high of the bad value).
_OUT_OF_RANGE_BY_FEED: dict[str, tuple[tuple[str, float, float], ...]] = {
    "air": (("humidity_pct", 101, 160), ("pm25_ugm3", -50, -1), ("temperature_c", 75, 120)),
    "flood": (("battery_pct", 101, 180), ("rain_mm", -20, -0.5), ("level_m", 600, 999)),
    "energy": (("power_factor", 1.05, 1.9), ("voltage_v", -240, -1), ("current_a", -50, -0.5)),
    "bus": (("lat", 91, 180), ("speed_kmh", 310, 999), ("heading_deg", 361, 720)),
}


__all__ = [
    "INCIDENT_KINDS",
    "MALFORMED_KINDS",
    "Incident",
    "LocalDay",
    "SimMessage",
    "Simulation",
    "bangkok",
    "bangkok_ms",
    "local_day",
    "make_incident",
    "schedule_incidents",
]
