"""The data that flows through nakhon, from raw bytes to stored points.

    InboundMessage --(format parser)--> RawReading --(registry, mapping, feed schema)--> Reading --> Point

Everything here is plain data with no I/O, shared by collectors, rules and gateway.
Times are UTC nanoseconds since the epoch (what InfluxDB stores); display code converts to Asia/Bangkok.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.feeds import measurement_for

FieldValue = float | int | bool | str


@dataclass(slots=True)
class DeviceRef:
    """How an envelope names a device: by our device id, or by its LoRaWAN DevEUI."""

    device_id: str | None = None
    dev_eui: str | None = None

    def __str__(self) -> str:
        return self.device_id or (f"deveui:{self.dev_eui}" if self.dev_eui else "<unknown>")


@dataclass(slots=True)
class RawReading:
    """What a payload format parser extracts from one message: lenient, vendor-named, not yet validated.

    `values` keeps vendor names and raw values (numbers may still be strings); `units` names the unit a
    format declared for a key (SenML), so the profile mapping can convert it.
    `topic_city` / `topic_feed` are set when the topic itself names them (native `city/{city}/{feed}/{id}`),
    so the pipeline can check them against the registry.
    """

    device: DeviceRef
    values: dict[str, Any]
    time_ns: int | None = None
    units: dict[str, str] = field(default_factory=dict)
    topic_city: str | None = None
    topic_feed: str | None = None


@dataclass(slots=True)
class DeviceInfo:
    """What the collectors and rules need to know about a registered device (read through a cache).

    `site` holds per-site numbers used by derived values, e.g. `bank_level_m`, `ground_level_m`,
    `mounting_height_m` (flood), `contracted_kw` (energy), `speed_limit_kmh` (bus).
    `thresholds` are per-device rule threshold overrides; `calibration` maps a canonical field to
    {"offset": float, "scale": float}.
    """

    device_id: str
    feed: str
    city: str
    district: str
    name: str = ""
    lat: float | None = None
    lon: float | None = None
    dev_eui: str | None = None
    profile: str | None = None
    status: str = "active"
    site: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)
    heartbeat_s: int | None = None
    maintenance_until_ns: int | None = None
    #: the field mapping (YAML profile) the collector applies: the device's profile, which is named after it
    mapping: str | None = None


@dataclass(slots=True)
class Reading:
    """One validated, normalised reading of one device: canonical fields plus derived ones.

    This is what the rules engine watches and what becomes one InfluxDB point.
    `tags` holds extra tags beyond the standard four (e.g. `tou` for energy, `aqi_pollutant` is a field).
    """

    device_id: str
    feed: str
    city: str
    district: str
    time_ns: int
    fields: dict[str, FieldValue]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def measurement(self) -> str:
        return measurement_for(self.feed)

    def to_point(self) -> Point:
        tags = {"device_id": self.device_id, "feed": self.feed, "city": self.city, "district": self.district}
        tags.update(self.tags)
        # The point shares the reading's fields: both are read-only once the reading has been enriched.
        return Point(self.measurement, tags, self.fields, self.time_ns)


@dataclass(slots=True)
class Point:
    """One time-series point, exactly as it is written to a sink."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int


@dataclass(slots=True, frozen=True)
class RecentMessage:
    """One raw message as the collectors saw it, accepted or not (and why): kept in memory by the collectors'
    diagnostics, stored by the registry for a device's diagnostics page."""

    topic: str
    payload: bytes | str
    accepted: bool
    reason: str | None = None
    received_ns: int | None = None  # UTC nanoseconds since the epoch; None means "now" when stored
