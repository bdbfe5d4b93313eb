"""Device profiles: how one kind of device's vendor fields become a feed's canonical fields (YAML, strict).

    # collectors/mapping/profiles/flood-ultrasonic-mm.yaml
    feed: flood
    description: Ultrasonic gauge reporting the distance down to the water in millimetres
    fields:
      distance: {to: level_m, unit: mm, transform: ultrasonic}
      battery: {to: battery_pct}

Our own configuration is validated strictly: an unknown key, a target that is not a canonical field of the
feed, an unknown unit or one that cannot convert to the target's unit are errors that name the file and
the key (`ProfileError`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from collectors.feeds import FEED_SPECS
from collectors.mapping.units import UnitError, canonical_unit, conversion, pint_name

Sentinel = float | int | str

# Values that mean "no reading" unless a profile says otherwise. Not -1 (a real temperature, a real
# analog reading): -1 is a sentinel only where a profile lists it for a field or a feed (Air4Thai).
# Beware 999999: a 6-digit energy register may legitimately read 999999 kWh; energy profiles override.
DEFAULT_SENTINELS: tuple[Sentinel, ...] = (-999, 999999, "-", "", "N/A")

BUILTIN_DIR = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldRule(_Strict):
    """How one vendor key becomes one canonical field.

    Order of operations: parse (strings, booleans) -> sentinels -> `scale`/`offset` (raw vendor scaling)
    -> unit conversion (`unit`, else the unit the format declared, e.g. SenML `u`) -> `transform`.
    """

    to: str = Field(description="canonical field name of the profile's feed")
    unit: str | None = Field(default=None, description="unit the vendor sends (overrides a SenML unit)")
    scale: float = 1.0
    offset: float = 0.0
    sentinels: list[Sentinel] | None = Field(
        default=None, description="values meaning 'missing' for this field (replace the profile's list)"
    )
    transform: Literal["ultrasonic"] | None = Field(
        default=None, description="ultrasonic: level = site.mounting_height_m - distance (after unit conversion)"
    )

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, unit: str | None) -> str | None:
        if unit is not None:
            try:
                pint_name(unit)
            except UnitError as exc:
                raise ValueError(str(exc)) from None
        return unit


class Profile(_Strict):
    """One device profile (see the module doc); `fields` maps vendor keys (dotted paths allowed) to rules."""

    name: str
    feed: Literal["air", "flood", "energy", "bus"]
    description: str = ""
    fields: dict[str, FieldRule] = Field(default_factory=dict)
    sentinels: list[Sentinel] = Field(default_factory=lambda: list(DEFAULT_SENTINELS))
    ignore: list[str] = Field(default_factory=list, description="vendor keys dropped without a note")
    passthrough: bool = Field(default=True, description="keys that already are canonical names pass through")
    # Defaults for the devices of this kind, copied into the registry's profile row when it is first created
    # (the registry's values then win: operators tune them per profile through the API).
    expected_fields: list[str] = Field(default_factory=list, description="canonical fields a device should send")
    default_thresholds: dict[str, float] = Field(default_factory=dict, description="rule parameters by name")
    heartbeat_s: int | None = Field(default=None, ge=10, le=7 * 24 * 3600, description="expected report interval")

    @model_validator(mode="after")
    def _targets_fit_the_feed(self) -> Profile:
        canonical = FEED_SPECS[self.feed].field_names
        for key, rule in self.fields.items():
            where = f"fields.{key}"
            if rule.to not in canonical:
                raise ValueError(
                    f"{where}.to: {rule.to!r} is not a field of feed {self.feed!r} ({', '.join(canonical)})"
                )
            target_unit = canonical_unit(rule.to)
            if rule.unit is not None:
                if target_unit is None:
                    raise ValueError(f"{where}.unit: {rule.to!r} is unitless, it takes no unit")
                try:
                    conversion(rule.unit, target_unit)
                except UnitError as exc:
                    raise ValueError(f"{where}.unit: {exc}") from None
            if rule.transform == "ultrasonic" and rule.to != "level_m":
                raise ValueError(f"{where}.transform: ultrasonic gives level_m, not {rule.to!r}")
        for name in self.expected_fields:
            if name not in canonical:
                raise ValueError(f"expected_fields: {name!r} is not a field of feed {self.feed!r}")
        return self


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    if error["type"] == "missing":
        return f"{loc}: required key missing"
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def parse_profile(text: str, name: str, source: str = "<string>") -> Profile:
    """Validate one profile from YAML text; errors name `source` and the key."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ProfileError(f"{source}: a profile must be a YAML mapping, got {type(doc).__name__}")
    declared = doc.get("name", name)
    if declared != name:
        raise ProfileError(f"{source}: name: {declared!r} differs from the file name {name!r}")
    try:
        return Profile.model_validate({**doc, "name": name})
    except ValidationError as exc:
        problems = "; ".join(_describe(dict(err)) for err in exc.errors())
        raise ProfileError(f"{source}: {problems}") from None


def load_profile(path: str | Path) -> Profile:
    """Load one YAML profile; its name is the file name without `.yaml`/`.yml`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_profile(text, path.stem, str(path))


def load_profiles(directory: str | Path) -> dict[str, Profile]:
    """Every `*.yaml` / `*.yml` profile in `directory`, by name (a duplicate name is an error)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ProfileError(f"{directory}: not a directory of profiles")
    profiles: dict[str, Profile] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        profile = load_profile(path)
        if profile.name in profiles:
            raise ProfileError(f"{path}: profile {profile.name!r} is defined twice in {directory}")
        profiles[profile.name] = profile
    return profiles


def check_profiles(directory: str | Path) -> tuple[dict[str, Profile], list[str]]:
    """Like `load_profiles`, but every file is tried: the good profiles and one error per bad file."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}, [f"{directory}: not a directory of profiles"]
    profiles: dict[str, Profile] = {}
    errors: list[str] = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            profile = load_profile(path)
        except ProfileError as exc:
            errors.append(str(exc))
            continue
        if profile.name in profiles:
            errors.append(f"{path}: profile {profile.name!r} is defined twice in {directory}")
            continue
        profiles[profile.name] = profile
    return profiles, errors


def all_profiles(directory: str | Path | None = None) -> dict[str, Profile]:
    """The shipped profiles, then those of `directory` (configured `[domain] profiles_dir`): a file there with
    a shipped name replaces the shipped profile. Raises `ProfileError` (file and key) for the first bad file."""
    profiles = builtin_profiles()
    if directory is not None:
        profiles.update(load_profiles(directory))
    return profiles


@lru_cache(maxsize=1)
def _builtin() -> dict[str, Profile]:
    return load_profiles(BUILTIN_DIR)


def builtin_profiles() -> dict[str, Profile]:
    """The profiles shipped with nakhon (`collectors/mapping/profiles/`)."""
    return dict(_builtin())


__all__ = [
    "DEFAULT_SENTINELS",
    "FieldRule",
    "Profile",
    "ProfileError",
    "all_profiles",
    "builtin_profiles",
    "check_profiles",
    "load_profile",
    "load_profiles",
    "parse_profile",
]
