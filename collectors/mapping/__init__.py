"""Field mapping: vendor-named raw values -> a feed's canonical values, per device profile.

    mapper = FieldMapper()
    values, notes = mapper.map(raw, "flood", builtin_profiles()["flood-ultrasonic-mm"], device.site,
                               device.calibration)

Lenient on device data: what cannot be used is dropped with a note, so the pipeline can store the rest and
count the notes; the feed schema validates the result strictly afterwards. One exception: a declared unit
that cannot convert to the canonical one raises `RejectedMessage("invalid_field")` naming both units.
"""

from __future__ import annotations

import contextlib
import math
import re
import typing
from typing import Any

from collectors.errors import RejectedMessage
from collectors.feeds import FEED_SPECS
from collectors.mapping.profiles import (
    DEFAULT_SENTINELS,
    FieldRule,
    Profile,
    ProfileError,
    Sentinel,
    builtin_profiles,
    load_profile,
    load_profiles,
    parse_profile,
)
from collectors.mapping.units import UnitError, canonical_unit, conversion
from core.model import RawReading

_TRUE = frozenset({"true", "on", "yes", "1", "open", "opened"})
_FALSE = frozenset({"false", "off", "no", "0", "closed", "close"})
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")


def _kind(annotation: Any) -> str:
    """'bool', 'int' or 'float' for a feed schema field annotation."""
    text = repr(annotation)
    if "bool" in text:
        return "bool"
    args = typing.get_args(annotation)
    if int in args or "int]" in text or "[int" in text:
        return "int"
    return "float"


def _field_kinds() -> dict[str, dict[str, str]]:
    return {
        feed: {name: _kind(info.annotation) for name, info in spec.model.model_fields.items()}
        for feed, spec in FEED_SPECS.items()
    }


class _Sentinels:
    """A sentinel list split into stripped strings and numbers, so "-999", " -999 " and -999.0 all match."""

    __slots__ = ("numbers", "strings")

    def __init__(self, values: typing.Iterable[Sentinel]) -> None:
        self.strings: set[str] = set()
        self.numbers: set[float] = set()
        for v in values:
            if isinstance(v, str):
                self.strings.add(v.strip())
                with contextlib.suppress(ValueError):
                    self.numbers.add(float(v))
            else:
                self.numbers.add(float(v))

    def match(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, str):
            s = value.strip()
            if s in self.strings:
                return True
            try:
                return float(s) in self.numbers
            except ValueError:
                return False
        if isinstance(value, int | float):
            return float(value) in self.numbers
        return False


def _lookup(values: dict[str, Any], key: str) -> tuple[bool, Any]:
    """A vendor key, exact first, else a dotted path into nested objects (`attributes.ignition`)."""
    if key in values:
        return True, values[key]
    if "." not in key:
        return False, None
    node: Any = values
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


class FieldMapper:
    """Maps one RawReading to canonical values with a profile (or none), a site and a calibration."""

    def __init__(self, default_sentinels: typing.Iterable[Sentinel] = DEFAULT_SENTINELS) -> None:
        self._default = _Sentinels(default_sentinels)
        self._kinds = _field_kinds()
        self._sentinel_cache: dict[tuple[Sentinel, ...], _Sentinels] = {}

    def _sentinels_for(self, values: list[Sentinel] | None, fallback: _Sentinels) -> _Sentinels:
        if values is None:
            return fallback
        key = tuple(values)
        cached = self._sentinel_cache.get(key)
        if cached is None:
            cached = self._sentinel_cache[key] = _Sentinels(values)
        return cached

    def _coerce(self, value: Any, kind: str, field: str, notes: list[str]) -> Any:
        """A raw value to the field's kind; None (with a note) when it cannot be."""
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, int | float) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            notes.append(f"{field}: {value!r} is not a boolean, dropped")
            return None
        if isinstance(value, bool):
            notes.append(f"{field}: boolean {value!r} where a number is expected, dropped")
            return None
        number: float | int
        if isinstance(value, int | float):
            number = value
        elif isinstance(value, str):
            text = value.strip()
            if _THOUSANDS.fullmatch(text):
                text = text.replace(",", "")
            try:
                number = int(text) if kind == "int" and text.lstrip("+-").isdigit() else float(text)
            except ValueError:
                notes.append(f"{field}: {value!r} is not a number, dropped")
                return None
        else:
            notes.append(f"{field}: a {type(value).__name__} is not a number, dropped")
            return None
        if isinstance(number, float) and not math.isfinite(number):
            notes.append(f"{field}: {value!r} is not a finite number, dropped")
            return None
        if kind == "int":
            if isinstance(number, float):
                if not number.is_integer():
                    notes.append(f"{field}: {value!r} is not a whole number, dropped")
                    return None
                number = int(number)
            return number
        return float(number)

    def _convert_unit(self, number: float, from_unit: str | None, key: str, field: str) -> float:
        """`number` in `from_unit` converted to the field's canonical unit (pint once per pair, then cached).

        A unit that cannot become the canonical one is not a gap to skip over: the value would be stored wrong
        or silently lost, so the reading is rejected `invalid_field` naming both units."""
        to_unit = canonical_unit(field)
        if from_unit is None or to_unit is None:
            return number
        try:
            scale, offset = conversion(from_unit, to_unit)
        except UnitError as exc:
            raise RejectedMessage(
                "invalid_field", f"{key}: unit {from_unit!r} cannot be converted to {to_unit!r} for {field} ({exc})"
            ) from None
        return number * scale + offset

    def map(
        self,
        raw: RawReading,
        feed: str,
        profile: Profile | None,
        site: dict[str, Any],
        calibration: dict[str, dict[str, float]],
    ) -> tuple[dict[str, Any], list[str]]:
        """Canonical values of `feed` and notes (dropped sentinels, unknown keys, unusable values)."""
        kinds = self._kinds.get(feed)
        if kinds is None:
            raise KeyError(f"unknown feed {feed!r}; known feeds: {', '.join(self._kinds)}")
        if profile is not None and profile.feed != feed:
            raise ProfileError(f"profile {profile.name!r} is for feed {profile.feed!r}, not {feed!r}")
        values = raw.values
        out: dict[str, Any] = {}
        notes: list[str] = []
        consumed: set[str] = set()
        feed_sentinels = self._default if profile is None else self._sentinels_for(profile.sentinels, self._default)

        rules: dict[str, FieldRule] = profile.fields if profile is not None else {}
        for key, rule in rules.items():
            found, value = _lookup(values, key)
            consumed.add(key if key in values else key.split(".", 1)[0])
            if not found:
                continue
            if rule.to in out:
                notes.append(f"{key}: {rule.to} already set from another key, ignored")
                continue
            mapped = self._one(
                value, key, rule.to, kinds[rule.to], rule, raw.units.get(key), feed_sentinels, site, notes
            )
            if mapped is not None:
                out[rule.to] = mapped

        passthrough = profile is None or profile.passthrough
        ignore = set(profile.ignore) if profile is not None else set()
        for key, value in values.items():
            if key in consumed or key in ignore:
                continue
            if passthrough and key in kinds:
                if key in out:
                    notes.append(f"{key}: already set by the profile, raw value ignored")
                    continue
                mapped = self._one(value, key, key, kinds[key], None, raw.units.get(key), feed_sentinels, site, notes)
                if mapped is not None:
                    out[key] = mapped
            else:
                notes.append(f"{key}: unknown key for feed {feed!r}, dropped")

        for field, cal in calibration.items():
            if field in out and kinds.get(field) == "float":
                out[field] = out[field] * float(cal.get("scale", 1.0)) + float(cal.get("offset", 0.0))
        return out, notes

    def _one(
        self,
        value: Any,
        key: str,
        field: str,
        kind: str,
        rule: FieldRule | None,
        declared_unit: str | None,
        feed_sentinels: _Sentinels,
        site: dict[str, Any],
        notes: list[str],
    ) -> Any:
        """One vendor value -> one canonical value (None when dropped, with a note)."""
        if value is None:
            notes.append(f"{key}: null, dropped")
            return None
        sentinels = feed_sentinels if rule is None else self._sentinels_for(rule.sentinels, feed_sentinels)
        if sentinels.match(value):
            notes.append(f"{key}: sentinel {value!r} means missing, dropped")
            return None
        coerced = self._coerce(value, kind, key, notes)
        if coerced is None or kind != "float":
            return coerced
        number: float = coerced
        if rule is not None:
            number = number * rule.scale + rule.offset
        # The unit the payload declares (SenML `u`) describes this very value: it wins over the profile's
        # assumption about the device; the profile's unit applies when the payload says nothing.
        unit = declared_unit if declared_unit is not None else (rule.unit if rule is not None else None)
        converted = self._convert_unit(number, unit, key, field)
        if rule is not None and rule.transform == "ultrasonic":
            height = site.get("mounting_height_m")
            if isinstance(height, bool) or not isinstance(height, int | float):
                notes.append(f"{key}: site has no numeric mounting_height_m for the ultrasonic transform, dropped")
                return None
            converted = float(height) - converted
        return converted


__all__ = [
    "DEFAULT_SENTINELS",
    "FieldMapper",
    "FieldRule",
    "Profile",
    "ProfileError",
    "builtin_profiles",
    "load_profile",
    "load_profiles",
    "parse_profile",
]
