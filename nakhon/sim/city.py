"""A deterministic simulated Thai city: districts, sites and about 200 devices over the four feeds.

The default city is Laem Chabang (แหลมฉบัง, Si Racha district, Chon Buri): the port town, its municipal
tambons and its neighbours. District names are real; coordinates are approximate (good enough for a map);
site names such as schools and factories are illustrative, not real institutions.

    city = City(seed=1)
    devices = city.devices()          # 200 devices: 60 air, 40 flood, 60 energy, 40 bus
    devices = city.devices(50)        # 50 devices spread over the feeds in the same proportions
    text = city.registry_csv()        # the registry import format

Every device is generated from `(seed, feed, index)` alone, so `devices(50)` is a prefix (per feed) of
`devices(200)`, and the same seed always gives the same city.
"""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass, field
from typing import Any

from core.feeds import FEEDS

LatLon = tuple[float, float]


@dataclass(frozen=True, slots=True)
class District:
    """A district (tambon / amphoe) of the simulated city: a centre and a radius where its devices sit."""

    name: str  # Thai name: the `district` tag
    name_en: str
    lat: float
    lon: float
    radius_km: float = 2.5


@dataclass(frozen=True, slots=True)
class School:
    """A destination of the school-bus routes (names are illustrative)."""

    name: str
    district: str
    lat: float
    lon: float


@dataclass(slots=True)
class SimDevice:
    """One simulated device, with what the registry needs (`site`) and what the simulator needs (`kind`, `route`).

    `kind` refines the signal profile: air `roadside|residential|industrial|port`; flood `canal|tidal`;
    energy `office|industrial|school|hospital|pump|street_lighting`; bus `van|bus`.
    `route` (bus only) is depot, stops..., school; the registered lat/lon of a bus is its depot.
    """

    device_id: str
    feed: str
    city: str
    district: str
    lat: float
    lon: float
    name: str
    site: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    route: tuple[LatLon, ...] = ()
    school: str = ""

    @property
    def topic(self) -> str:
        return f"city/{self.city}/{self.feed}/{self.device_id}"


LAEM_CHABANG_DISTRICTS: tuple[District, ...] = (
    District("ทุ่งสุขลา", "Thung Sukhla", 13.0870, 100.9080, 2.5),
    District("บึง", "Bueng", 13.1050, 100.9500, 2.5),
    District("หนองขาม", "Nong Kham", 13.1300, 100.9800, 3.0),
    District("บางละมุง", "Bang Lamung", 13.0470, 100.9280, 3.0),
    District("ศรีราชา", "Si Racha", 13.1680, 100.9290, 2.5),
    District("สุรศักดิ์", "Surasak", 13.1500, 100.9650, 2.5),
    District("บ่อวิน", "Bo Win", 13.0450, 101.0750, 3.5),
)

LAEM_CHABANG_SCHOOLS: tuple[School, ...] = (
    School("โรงเรียนเทศบาลแหลมฉบัง 1", "ทุ่งสุขลา", 13.0815, 100.9120),
    School("โรงเรียนเทศบาลแหลมฉบัง 2", "บึง", 13.1010, 100.9410),
    School("โรงเรียนเทศบาลแหลมฉบัง 3", "หนองขาม", 13.1255, 100.9700),
    School("โรงเรียนอนุบาลศรีราชา", "ศรีราชา", 13.1660, 100.9330),
    School("โรงเรียนบางละมุงวิทยา", "บางละมุง", 13.0500, 100.9240),
    School("โรงเรียนบ่อวินพัฒนา", "บ่อวิน", 13.0480, 101.0690),
)

# Default feed mix of the ~200-device city.
DEFAULT_MIX: dict[str, int] = {"air": 60, "flood": 40, "energy": 60, "bus": 40}

_KINDS: dict[str, tuple[tuple[str, float], ...]] = {
    "air": (("roadside", 0.35), ("residential", 0.35), ("industrial", 0.2), ("port", 0.1)),
    "flood": (("canal", 0.65), ("tidal", 0.35)),
    "energy": (
        ("office", 0.3),
        ("industrial", 0.25),
        ("school", 0.15),
        ("hospital", 0.1),
        ("pump", 0.1),
        ("street_lighting", 0.1),
    ),
    "bus": (("van", 0.7), ("bus", 0.3)),
}

_NAMES_TH: dict[str, str] = {
    "air": "สถานีตรวจวัดคุณภาพอากาศ",
    "flood": "สถานีวัดระดับน้ำ",
    "energy": "มิเตอร์ไฟฟ้า",
    "bus": "รถรับส่งนักเรียน",
}
_KIND_TH: dict[str, str] = {
    "roadside": "ริมถนน",
    "residential": "ชุมชน",
    "industrial": "โรงงาน",
    "port": "ท่าเรือ",
    "canal": "คลอง",
    "tidal": "คลองน้ำขึ้นน้ำลง",
    "office": "สำนักงาน",
    "school": "โรงเรียน",
    "hospital": "โรงพยาบาล",
    "pump": "สถานีสูบน้ำ",
    "street_lighting": "ไฟถนน",
    "van": "รถตู้",
    "bus": "รถบัส",
}
# Contracted demand ranges (kW) per energy site kind.
_CONTRACTED_KW: dict[str, tuple[float, float]] = {
    "office": (80, 400),
    "industrial": (500, 3000),
    "school": (40, 200),
    "hospital": (300, 1500),
    "pump": (50, 250),
    "street_lighting": (10, 60),
}

_PREFIX = {"air": "air", "flood": "wl", "energy": "em", "bus": "bus"}

REGISTRY_COLUMNS: tuple[str, ...] = ("device_id", "feed", "city", "district", "lat", "lon", "name")
SITE_COLUMNS: tuple[str, ...] = ("bank_level_m", "ground_level_m", "contracted_kw")


def _weighted(rng: random.Random, options: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([o[0] for o in options], weights=[o[1] for o in options])[0]


def _offset(lat: float, lon: float, rng: random.Random, radius_km: float) -> LatLon:
    """A point at a random distance (≤ radius, denser near the centre) and bearing from (lat, lon)."""
    distance = radius_km * math.sqrt(rng.random())
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(bearing) / 111.32
    dlon = distance * math.sin(bearing) / (111.32 * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


def split_counts(total: int, mix: dict[str, int]) -> dict[str, int]:
    """`total` split over the feeds in proportion to `mix` (largest remainder, ties in feed order)."""
    weight = sum(mix.values())
    if total < 0:
        raise ValueError("device count must be ≥ 0")
    exact = {feed: total * share / weight for feed, share in mix.items()}
    counts = {feed: math.floor(value) for feed, value in exact.items()}
    left = total - sum(counts.values())
    order = sorted(mix, key=lambda feed: (-(exact[feed] - counts[feed]), list(mix).index(feed)))
    for feed in order[:left]:
        counts[feed] += 1
    return counts


class City:
    """A seeded simulated city. The same `seed` always yields the same devices, names, sites and routes."""

    def __init__(
        self,
        seed: int = 1,
        *,
        slug: str = "laem-chabang",
        name: str = "แหลมฉบัง",
        name_en: str = "Laem Chabang",
        districts: tuple[District, ...] = LAEM_CHABANG_DISTRICTS,
        schools: tuple[School, ...] = LAEM_CHABANG_SCHOOLS,
        mix: dict[str, int] | None = None,
        id_prefix: str = "lcb",
    ) -> None:
        self.seed = seed
        self.slug = slug
        self.name = name
        self.name_en = name_en
        self.districts = districts
        self.schools = schools
        self.mix = dict(mix or DEFAULT_MIX)
        unknown = set(self.mix) - set(FEEDS)
        if unknown:
            raise ValueError(f"unknown feeds in mix: {sorted(unknown)}")
        self.id_prefix = id_prefix
        self._cache: dict[tuple[str, int], SimDevice] = {}

    @property
    def default_size(self) -> int:
        return sum(self.mix.values())

    def district(self, name: str) -> District:
        for district in self.districts:
            if district.name == name:
                return district
        raise KeyError(name)

    def devices(self, n: int | None = None) -> list[SimDevice]:
        """`n` devices (default: the city's ~200) spread over the feeds in the mix's proportions."""
        counts = split_counts(self.default_size if n is None else n, self.mix)
        return [self.device(feed, index) for feed in self.mix for index in range(counts[feed])]

    def device(self, feed: str, index: int) -> SimDevice:
        """The `index`-th device of `feed` (0-based), generated from (seed, feed, index) alone."""
        key = (feed, index)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._make(feed, index)
        return cached

    def _make(self, feed: str, index: int) -> SimDevice:
        rng = random.Random(f"nakhon-city:{self.slug}:{self.seed}:{feed}:{index}")
        device_id = f"{self.id_prefix}-{_PREFIX[feed]}-{index + 1:03d}"
        kind = _weighted(rng, _KINDS[feed])
        if feed == "bus":
            return self._make_bus(rng, device_id, kind, index)
        # Spread devices over districts round-robin (offset by feed) so every district has every feed.
        district = self.districts[(index + len(feed)) % len(self.districts)]
        lat, lon = _offset(district.lat, district.lon, rng, district.radius_km)
        site: dict[str, Any] = {}
        if feed == "flood":
            ground = round(rng.uniform(0.3, 3.5) if kind == "canal" else rng.uniform(-0.5, 1.0), 2)
            site = {"ground_level_m": ground, "bank_level_m": round(ground + rng.uniform(1.6, 3.0), 2)}
        elif feed == "energy":
            lo, hi = _CONTRACTED_KW[kind]
            site = {"contracted_kw": float(round(rng.uniform(lo, hi) / 5) * 5)}
        name = f"{_NAMES_TH[feed]} {_KIND_TH[kind]} {district.name} {index + 1:02d}"
        return SimDevice(device_id, feed, self.slug, district.name, lat, lon, name, site, kind)

    def _make_bus(self, rng: random.Random, device_id: str, kind: str, index: int) -> SimDevice:
        school = self.schools[index % len(self.schools)]
        home = self.district(school.district)
        # The depot (the driver's home) is 3–9 km from the school, stops lie roughly along the way.
        bearing = rng.uniform(0, 2 * math.pi)
        distance_km = rng.uniform(3.0, 9.0)
        cos_lat = math.cos(math.radians(school.lat))
        depot = (
            round(school.lat + distance_km * math.cos(bearing) / 111.32, 6),
            round(school.lon + distance_km * math.sin(bearing) / (111.32 * cos_lat), 6),
        )
        n_stops = rng.randint(3, 6)
        stops: list[LatLon] = []
        for k in range(1, n_stops + 1):
            f = k / (n_stops + 1)
            lat = depot[0] + (school.lat - depot[0]) * f
            lon = depot[1] + (school.lon - depot[1]) * f
            stops.append(_offset(lat, lon, rng, 0.8))
        route = (depot, *stops, (school.lat, school.lon))
        plate = f"{rng.randint(10, 99)}-{rng.randint(1000, 9999)} ชลบุรี"
        name = f"{_NAMES_TH['bus']} ({_KIND_TH[kind]}) {plate} → {school.name}"
        return SimDevice(device_id, "bus", self.slug, home.name, depot[0], depot[1], name, {}, kind, route, school.name)

    def registry_csv(self, devices: list[SimDevice] | None = None) -> str:
        """The devices in the registry import format: `device_id,feed,city,district,lat,lon,name,site_*`."""
        rows = self.devices() if devices is None else devices
        return registry_csv(rows)


def registry_csv(devices: list[SimDevice]) -> str:
    """Registry import CSV for `devices` (site columns empty where a site value does not apply)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*REGISTRY_COLUMNS, *(f"site_{c}" for c in SITE_COLUMNS)])
    for d in devices:
        writer.writerow(
            [d.device_id, d.feed, d.city, d.district, f"{d.lat:.6f}", f"{d.lon:.6f}", d.name]
            + ["" if d.site.get(c) is None else repr(float(d.site[c])) for c in SITE_COLUMNS]
        )
    return out.getvalue()


__all__ = [
    "DEFAULT_MIX",
    "LAEM_CHABANG_DISTRICTS",
    "LAEM_CHABANG_SCHOOLS",
    "City",
    "District",
    "School",
    "SimDevice",
    "registry_csv",
    "split_counts",
]
