"""Rule files as pydantic models.

A rule file (YAML) holds `rules:` and optionally `thresholds:` (city / district / profile values for named
parameters). A condition is a mapping with exactly one key naming its kind:

    compare:  {field: aqi_th, op: ">=", value: {param: aqi_th_alert, default: 101}}
    range:    {field: voltage_v, min: 207, max: 253, inside: false}
    rate:     {field: level_m, window: 30m, per: 10m, op: ">", value: 0.1}
    absent:   {default: 15m, factor: 1.0}              # heartbeat; only as a rule's whole `when`
    geofence: {zones: zones/schools.geojson, name: "โรงเรียน", mode: inside | outside | dwell, dwell: 10m}
    schedule: {days: [mon-fri], start: "09:00", end: "22:00", holidays: exclude}
    all: [...] · any: [...] · not: {...}

A value is a literal or a threshold reference resolved per device:
device `thresholds[param]` > reading `field` > device `site[site]` > profile > district > city > `default`.
"""

from __future__ import annotations

import json
from datetime import time as dtime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.prepared import PreparedGeometry, prep

from rules.timeutil import Duration

Feed = Literal["air", "flood", "energy", "bus"]
Op = Literal[">", ">=", "<", "<=", "==", "!="]


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ThresholdRef(_Strict):
    """A value resolved per device. At least one source must be named."""

    param: str | None = None
    field: str | None = None
    site: str | None = None
    default: float | None = None
    scale: float = 1.0

    @model_validator(mode="after")
    def _one_source(self) -> ThresholdRef:
        if self.param is None and self.field is None and self.site is None and self.default is None:
            raise ValueError("a threshold reference needs at least one of param, field, site, default")
        return self


Operand = bool | float | str | ThresholdRef


class CompareSpec(_Strict):
    field: str
    op: Op
    value: Operand


class RangeSpec(_Strict):
    field: str
    min: float | ThresholdRef | None = None
    max: float | ThresholdRef | None = None
    inside: bool = True

    @model_validator(mode="after")
    def _bounds(self) -> RangeSpec:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        return self


class RateSpec(_Strict):
    """Rate of change of `field` over the last `window`, expressed per `per` (default per minute)."""

    field: str
    window: Duration
    per: Duration = 60.0
    op: Op
    value: float | ThresholdRef
    min_span: Duration | None = None  # the oldest sample used must be at least this old (default window/2)

    @field_validator("window", "per")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be longer than 0s")
        return v


class AbsentSpec(_Strict):
    """No reading for longer than the device's heartbeat × factor.

    Heartbeat: `DeviceInfo.heartbeat_s` (profile default with per-device override, from the registry), else
    the threshold chain for `param` (device > profile > district > city), else `default`.
    """

    default: Duration = 900.0
    factor: float = Field(1.0, gt=0)
    param: str = "heartbeat_s"


class GeofenceSpec(_Strict):
    zones: str | None = None  # GeoJSON file, relative to the rule file
    geometry: dict[str, Any] | None = None  # inline GeoJSON geometry
    name: str | None = None  # keep only features whose properties.name (or id) equals this
    mode: Literal["inside", "outside", "dwell"] = "inside"
    dwell: Duration = 0.0
    lat_field: str = "lat"
    lon_field: str = "lon"
    _shape: BaseGeometry | None = PrivateAttr(default=None)
    _prepared: PreparedGeometry | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> GeofenceSpec:
        if (self.zones is None) == (self.geometry is None):
            raise ValueError("a geofence needs exactly one of zones (a GeoJSON file) or geometry (inline)")
        if self.mode == "dwell" and self.dwell <= 0:
            raise ValueError("mode dwell needs dwell > 0 (e.g. dwell: 10m)")
        if self.geometry is not None:
            geo = _geometry(self.geometry)
        else:
            base = Path((info.context or {}).get("base_dir", "."))
            path = base / str(self.zones)
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read GeoJSON {path}: {exc}") from exc
            geo = _features(doc, self.name)
        self._shape = geo
        self._prepared = prep(geo)
        return self

    def contains(self, lat: float, lon: float) -> bool:
        from shapely.geometry import Point as ShapelyPoint

        assert self._prepared is not None
        return bool(self._prepared.covers(ShapelyPoint(lon, lat)))


def _geometry(obj: dict[str, Any]) -> BaseGeometry:
    try:
        geo = shape(obj)
    except Exception as exc:
        raise ValueError(f"invalid GeoJSON geometry: {exc}") from exc
    if geo.is_empty or geo.geom_type not in ("Polygon", "MultiPolygon"):
        raise ValueError("a geofence geometry must be a non-empty Polygon or MultiPolygon")
    return geo


def _features(doc: Any, name: str | None) -> BaseGeometry:
    from shapely.ops import unary_union

    if not isinstance(doc, dict):
        raise ValueError("GeoJSON must be an object")
    if doc.get("type") == "FeatureCollection":
        feats = doc.get("features") or []
    elif doc.get("type") == "Feature":
        feats = [doc]
    else:
        return _geometry(doc)
    geoms = []
    for feat in feats:
        props = feat.get("properties") or {}
        if name is not None and name not in (props.get("name"), feat.get("id"), props.get("id")):
            continue
        geoms.append(_geometry(feat.get("geometry") or {}))
    if not geoms:
        raise ValueError(f"no polygon feature{f' named {name!r}' if name else ''} in the GeoJSON")
    return unary_union(geoms)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleSpec(_Strict):
    """True when the reading's time, in Asia/Bangkok, is inside the window (end may be past midnight)."""

    days: list[int] = Field(default_factory=lambda: list(range(7)))
    start: dtime = dtime(0, 0)
    end: dtime | None = None  # None = end of day ("24:00")
    holidays: Literal["any", "exclude", "only"] = "any"

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, v: Any) -> list[int]:
        if isinstance(v, str):
            v = [v]
        out: list[int] = []
        for item in v:
            if isinstance(item, int):
                out.append(item)
                continue
            text = str(item).strip().lower()[:7]
            if "-" in text:
                a, b = (p.strip()[:3] for p in text.split("-", 1))
                if a not in WEEKDAYS or b not in WEEKDAYS:
                    raise ValueError(f"unknown weekday range {item!r} (use mon-fri)")
                i, j = WEEKDAYS.index(a), WEEKDAYS.index(b)
                out.extend(WEEKDAYS.index(d) % 7 for d in (WEEKDAYS * 2)[i : (j if j >= i else j + 7) + 1])
            elif text[:3] in WEEKDAYS:
                out.append(WEEKDAYS.index(text[:3]))
            else:
                raise ValueError(f"unknown weekday {item!r} (use mon, tue, … sun)")
        return sorted(set(out))

    @field_validator("end", mode="before")
    @classmethod
    def _end(cls, v: Any) -> Any:
        return None if v in ("24:00", "24:00:00") else v

    @field_validator("start", "end", mode="before")
    @classmethod
    def _sexagesimal(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted 09:00 as the base-60 integer 540
        if isinstance(v, int) and not isinstance(v, bool):
            return dtime(v // 60 % 24, v % 60)
        return v


class Compare(_Strict):
    compare: CompareSpec


class Range(_Strict):
    range: RangeSpec


class Rate(_Strict):
    rate: RateSpec


class Absent(_Strict):
    absent: AbsentSpec


class Geofence(_Strict):
    geofence: GeofenceSpec


class Schedule(_Strict):
    schedule: ScheduleSpec


class All(_Strict):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    any: list[Condition] = Field(min_length=1)


class Not(_Strict):
    not_: Condition = Field(alias="not")


CONDITION_KINDS = ("compare", "range", "rate", "absent", "geofence", "schedule", "all", "any", "not")


def _condition_kind(v: Any) -> str | None:
    if isinstance(v, dict):
        keys = list(v)
        return keys[0] if len(keys) == 1 and keys[0] in CONDITION_KINDS else None
    for kind, cls in _KIND_CLASSES.items():
        if isinstance(v, cls):
            return kind
    return None


Condition = Annotated[
    Annotated[Compare, Tag("compare")]
    | Annotated[Range, Tag("range")]
    | Annotated[Rate, Tag("rate")]
    | Annotated[Absent, Tag("absent")]
    | Annotated[Geofence, Tag("geofence")]
    | Annotated[Schedule, Tag("schedule")]
    | Annotated[All, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[Not, Tag("not")],
    Discriminator(
        _condition_kind,
        custom_error_type="invalid_condition",
        custom_error_message="a condition is a mapping with exactly one key: " + ", ".join(CONDITION_KINDS),
    ),
]

_KIND_CLASSES: dict[str, type[BaseModel]] = {
    "compare": Compare,
    "range": Range,
    "rate": Rate,
    "absent": Absent,
    "geofence": Geofence,
    "schedule": Schedule,
    "all": All,
    "any": AnyOf,
    "not": Not,
}
All.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


def walk(cond: Any) -> list[Any]:
    """Every condition node under (and including) `cond`."""
    out = [cond]
    if isinstance(cond, All):
        for c in cond.all:
            out.extend(walk(c))
    elif isinstance(cond, AnyOf):
        for c in cond.any:
            out.extend(walk(c))
    elif isinstance(cond, Not):
        out.extend(walk(cond.not_))
    return out


class MatchSpec(_Strict):
    """Which devices a rule watches (empty = all of its feed)."""

    cities: list[str] = Field(default_factory=list)
    districts: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=list)


class Rule(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$", max_length=120)
    feed: Feed
    severity: Severity = Severity.warning
    summary_th: str = Field(min_length=1)
    summary_en: str = Field(min_length=1)
    description: str = ""
    match: MatchSpec = Field(default_factory=MatchSpec)
    when: Condition
    clear: Condition | None = None
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    labels: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("summary_th", "summary_en")
    @classmethod
    def _template(cls, v: str) -> str:
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import SandboxedEnvironment

        try:
            SandboxedEnvironment().parse(v)
        except TemplateSyntaxError as exc:
            raise ValueError(f"invalid template: {exc.message}") from exc
        return v

    @model_validator(mode="after")
    def _absent_alone(self) -> Rule:
        nested = [c for c in walk(self.when)[1:] if isinstance(c, Absent)]
        if nested:
            raise ValueError("absent must be the whole `when` of a rule, not nested in all/any/not")
        if self.clear is not None and any(isinstance(c, Absent) for c in walk(self.clear)):
            raise ValueError("absent cannot be used in `clear` (an absence clears when data arrives)")
        if isinstance(self.when, Absent) and self.clear is not None:
            raise ValueError("an absence rule clears when data arrives; remove `clear`")
        return self

    @property
    def is_absence(self) -> bool:
        return isinstance(self.when, Absent)

    def applies_to(self, device_id: str, city: str, district: str, profile: str | None) -> bool:
        m = self.match
        return (
            (not m.cities or city in m.cities)
            and (not m.districts or district in m.districts or f"{city}/{district}" in m.districts)
            and (not m.devices or device_id in m.devices)
            and (not m.profiles or (profile is not None and profile in m.profiles))
        )


class ThresholdConfig(_Strict):
    """Rule-set level thresholds by parameter name: city > district > profile get more specific."""

    city: dict[str, dict[str, float]] = Field(default_factory=dict)
    district: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)  # city -> district -> params
    profile: dict[str, dict[str, float]] = Field(default_factory=dict)


class RuleFile(_Strict):
    thresholds: ThresholdConfig = Field(default_factory=ThresholdConfig)
    rules: list[Rule] = Field(default_factory=list)


class RuleSet(BaseModel):
    """All rules loaded from a directory, with merged thresholds and where each rule came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    rules: list[Rule] = Field(default_factory=list)
    thresholds: ThresholdConfig = Field(default_factory=ThresholdConfig)
    sources: dict[str, str] = Field(default_factory=dict)  # rule name -> "file:line"

    def by_name(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def subset(self, names: list[str]) -> RuleSet:
        return RuleSet(rules=[self.by_name(n) for n in names], thresholds=self.thresholds, sources=self.sources)
