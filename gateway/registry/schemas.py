"""Validated shapes of the registry's input and output (pydantic v2).

Input is strict: unknown keys are refused, identifiers must be topic-safe (they appear in MQTT topics and
InfluxDB tags), numbers must be finite and in range. Output models are what the API and CLI show.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from core.feeds import FEED_SPECS

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DEV_EUI_PATTERN = re.compile(r"^[0-9a-f]{16}$")
THRESHOLD_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

Feed = Literal["air", "flood", "energy", "bus"]
Status = Literal["active", "retired"]
Role = Literal["admin", "engineer", "operator", "viewer"]
ROLES: tuple[str, ...] = ("admin", "engineer", "operator", "viewer")

# Identifiers that become MQTT topic levels or tags: no '/', '+', '#', whitespace or control characters.
Identifier = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]
PlainText = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
RequiredText = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")
]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# JSON-only numbers (never read from CSV text): strict, so `false` or "12" is refused as the schema says.
StrictFiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
ThresholdName = Annotated[str, StringConstraints(pattern=THRESHOLD_NAME_PATTERN)]
# additionalProperties false: a key outside the pattern is refused, and the OpenAPI document says so.
Thresholds = Annotated[
    dict[ThresholdName, StrictFiniteFloat], Field(max_length=200, json_schema_extra={"additionalProperties": False})
]
HeartbeatSeconds = Annotated[int, Field(ge=10, le=7 * 24 * 3600, description="Expected reporting interval, s")]

# Per-site numbers the feeds' derived values use, with sane physical ranges.
SITE_FIELDS: dict[str, tuple[float, float, str]] = {
    "bank_level_m": (-50, 500, "Lowest bank level, m MSL (flood)"),
    "ground_level_m": (-50, 500, "Ground / river bed level, m MSL (flood)"),
    "mounting_height_m": (0, 100, "Ultrasonic sensor height above the datum, m (flood)"),
    "contracted_kw": (0, 1e6, "Contracted demand, kW (energy)"),
    "speed_limit_kmh": (5, 200, "Speed limit, km/h (bus)"),
    "register_rollover_kwh": (1, 1e12, "Value at which the energy register wraps to zero, kWh (energy)"),
    "register_digits": (1, 12, "Digits of the energy register display, e.g. 6 for 999999 (energy)"),
    "register_decimals": (0, 6, "Of those digits, decimals, e.g. 1 for 99999.9 (energy)"),
}
# Per-site words: the road class picks the bus speed limit among [domain] speed_limits_kmh (unknown classes
# fall back to the default limit there, so any short identifier is accepted here).
SITE_TEXT_FIELDS: dict[str, str] = {"road_class": "Road class: municipal, rural, divided, expressway (bus)"}
_SITE_WORD = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def check_expected_fields(feed: str, fields: list[str]) -> None:
    known = FEED_SPECS[feed].field_names
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise ValueError(f"not fields of feed {feed!r}: {', '.join(unknown)}; known: {', '.join(known)}")
    if len(set(fields)) != len(fields):
        raise ValueError("fields are listed more than once")


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of the supported time range") from None


_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def _time_as_text(value: Any) -> Any:
    """pydantic would read 0 or "0.5" as seconds since 1970; the API's times are ISO 8601 text only."""
    if isinstance(value, bool | int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("a time is ISO 8601 text with an offset, e.g. 2026-11-22T08:00:00+07:00")
    return value


# A time with an explicit offset, normalised to UTC (a naive time is refused: which zone was meant?).
UtcTime = Annotated[AwareDatetime, BeforeValidator(_time_as_text), AfterValidator(_to_utc)]


def _check_dev_eui(value: str | None) -> str | None:
    if value is None:
        return None
    normalised = value.strip().lower()
    if not DEV_EUI_PATTERN.fullmatch(normalised):
        raise ValueError("DevEUI must be 16 hexadecimal digits, e.g. 70b3d57ed0001234")
    return normalised


DevEui = Annotated[str, StringConstraints(pattern=r"^\s*[0-9A-Fa-f]{16}\s*$"), AfterValidator(_check_dev_eui)]


def check_site(site: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in site.items():
        if key in SITE_TEXT_FIELDS:
            if not isinstance(value, str) or not _SITE_WORD.fullmatch(value):
                raise ValueError(f"site field {key!r} must be a lower-case word such as 'municipal'")
            checked[key] = value
            continue
        if key not in SITE_FIELDS:
            raise ValueError(f"unknown site field {key!r}; known: {', '.join([*SITE_FIELDS, *SITE_TEXT_FIELDS])}")
        lo, hi, _ = SITE_FIELDS[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"site field {key!r} must be a finite number")
        if not lo <= value <= hi:
            raise ValueError(f"site field {key!r} must be between {lo:g} and {hi:g}")
        checked[key] = float(value)
    return checked


def _site_json_schema() -> dict[str, Any]:
    """What `check_site` accepts, so that the OpenAPI document says it (keys, ranges, no other keys)."""
    properties: dict[str, Any] = {
        key: {"type": "number", "minimum": lo, "maximum": hi, "description": text}
        for key, (lo, hi, text) in SITE_FIELDS.items()
    }
    for key, text in SITE_TEXT_FIELDS.items():
        properties[key] = {"type": "string", "pattern": _SITE_WORD.pattern, "description": text}
    return {"type": "object", "properties": properties, "additionalProperties": False}


SiteValues = Annotated[dict[str, Any], AfterValidator(check_site), WithJsonSchema(_site_json_schema())]


def _expected_fields_json_schema(schema: dict[str, Any]) -> None:
    # Every feed's field names (which of them a profile may list depends on its feed: checked by the model),
    # read when the schema is generated: by then the feed plugins have registered their specs in core.feeds.
    every_field = sorted({f for spec in FEED_SPECS.values() for f in spec.field_names})
    schema.update({"uniqueItems": True, "items": {"type": "string", "enum": every_field}})


ExpectedFields = Annotated[list[str], Field(max_length=64, json_schema_extra=_expected_fields_json_schema)]


class StrictInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# Names the broker's service accounts use or may use (compared without case). Device accounts are prefixed
# (`device.<id>`) so they cannot collide anyway; refusing these ids too keeps names unambiguous for people
# reading the broker, the logs and the audit. The configured service names are refused by `DeviceService`.
RESERVED_DEVICE_IDS = frozenset({"admin", "collector", "collectors", "gateway", "nakhon", "mosquitto", "root"})
RESERVED_DEVICE_ID_PREFIXES = ("nakhon-", "nakhon_", "nakhon.", "device.", "$")


def reserved_device_id(device_id: str, extra: frozenset[str] = frozenset()) -> bool:
    folded = device_id.casefold()
    return (
        folded in RESERVED_DEVICE_IDS
        or folded in {e.casefold() for e in extra}
        or folded.startswith(RESERVED_DEVICE_ID_PREFIXES)
    )


def _not_reserved(device_id: str) -> str:
    if reserved_device_id(device_id):
        raise ValueError(f"{device_id!r} is reserved for the broker's service accounts; choose another device id")
    return device_id


class DeviceSpec(StrictInput):
    """A device as registered (create, CSV import)."""

    device_id: Annotated[Identifier, AfterValidator(_not_reserved)]
    feed: Feed
    city: Identifier
    district: RequiredText
    name: PlainText = ""
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    dev_eui: DevEui | None = None
    profile: Identifier | None = None
    site: SiteValues = Field(default_factory=dict)
    heartbeat_s: HeartbeatSeconds | None = None


class DevicePatch(StrictInput):
    """A partial update; only the keys given change. `device_id` and credentials are not changed here."""

    feed: Feed | None = None
    city: Identifier | None = None
    district: RequiredText | None = None
    name: PlainText | None = None
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    dev_eui: DevEui | None = None
    profile: Identifier | None = None
    site: SiteValues | None = None
    heartbeat_s: HeartbeatSeconds | None = None


class ProfileSpec(StrictInput):
    name: Identifier
    feed: Feed
    description: PlainText = ""
    expected_fields: ExpectedFields = Field(default_factory=list)
    default_thresholds: Thresholds = Field(default_factory=dict)
    heartbeat_s: HeartbeatSeconds | None = None

    @field_validator("expected_fields")
    @classmethod
    def _fields_of_the_feed(cls, fields: list[str], info: Any) -> list[str]:
        feed = info.data.get("feed")
        if feed in FEED_SPECS:
            check_expected_fields(feed, fields)
        return fields


class ProfilePatch(StrictInput):
    description: PlainText | None = None
    expected_fields: ExpectedFields | None = None
    default_thresholds: Thresholds | None = None
    heartbeat_s: HeartbeatSeconds | None = None


class Calibration(StrictInput):
    """value' = value * scale + offset"""

    offset: StrictFiniteFloat = 0.0
    scale: Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=1e6)] = 1.0


class OverridesSpec(StrictInput):
    thresholds: Thresholds = Field(default_factory=dict)
    calibration: dict[str, Calibration] = Field(default_factory=dict, max_length=64)


class MaintenanceSpec(StrictInput):
    """Maintenance ends by itself at `until` (a time with an offset; stored UTC). `null` ends it now."""

    until: UtcTime | None = Field(description="End of maintenance with a UTC offset, e.g. 2026-11-22T08:00:00+07:00")


class TokenSpec(StrictInput):
    name: Identifier
    role: Role
    expires_at: UtcTime | None = Field(default=None, description="Refused from this time on; none: no expiry")
    cities: list[Identifier] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Only these cities' devices, alerts and silences; none: every city",
    )


# ---------------------------------------------------------------- output

T = TypeVar("T")


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class DeviceOut(Output):
    device_id: str
    feed: str
    city: str
    district: str
    name: str
    lat: float | None
    lon: float | None
    dev_eui: str | None
    profile: str | None
    site: dict[str, Any]
    status: str
    heartbeat_s: int | None
    maintenance_until: datetime | None
    in_maintenance: bool = False
    mqtt_username: str | None
    has_mqtt_credentials: bool = False
    topic: str = ""
    created_at: datetime
    updated_at: datetime


class ProfileOut(Output):
    name: str
    feed: str
    description: str
    expected_fields: list[str]
    default_thresholds: dict[str, Any]
    heartbeat_s: int | None
    created_at: datetime
    updated_at: datetime


class OverridesOut(Output):
    device_id: str
    thresholds: dict[str, Any]
    calibration: dict[str, Any]
    updated_at: datetime | None = None


class TokenOut(Output):
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    cities: list[str] | None = None


class AuditOut(Output):
    id: int
    at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class RecentMessageOut(Output):
    received_at: datetime
    topic: str
    payload: str
    accepted: bool
    reason: str | None


class DiagnosticsOut(BaseModel):
    device: DeviceOut
    last_seen: datetime | None
    last_reading_at: datetime | None
    last_reading: Any = None
    recent_messages: list[RecentMessageOut]


class Page(BaseModel, Generic[T]):
    total: int
    limit: int
    offset: int
    items: list[T]


class ImportReport(BaseModel):
    """What a CSV import did (or, for a dry run or a refused file, would have done)."""

    dry_run: bool
    applied: bool
    rows: int
    created: int
    updated: int
    unchanged: int
    rejected: int
    errors: list[dict[str, Any]]
    created_ids: list[str] = Field(default_factory=list, exclude=True)
    updated_ids: list[str] = Field(default_factory=list, exclude=True)
    # (device_id, old topic, new topic) for provisioned devices whose city or feed changed: the broker's ACL follows.
    topic_changes: list[tuple[str, str, str]] = Field(default_factory=list, exclude=True)
    broker_errors: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Rows whose move the broker refused: the registry was put back to the old city/feed for them",
    )


def topic_for(city: str, feed: str, device_id: str) -> str:
    """The one topic a device may publish to."""
    return f"city/{city}/{feed}/{device_id}"
