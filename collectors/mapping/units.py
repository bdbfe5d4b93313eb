"""Unit names (SenML, vendor, pint) and fast conversions to the canonical units of the feeds.

pint is exact but slow for the hot path (about 20 µs per `Quantity.to()` here), and every unit we meet is
an affine map `y = x * scale + offset`. So pint is asked once per (from, to) pair, the pair is cached,
and a conversion at run time is one multiply and one add (about 0.1 µs).
"""

from __future__ import annotations

from functools import lru_cache

import pint

# How a unit may be written in a payload or a profile -> its pint name. SenML names (RFC 8428 section 12.1,
# and RFC 8798) come first; anything not listed is tried on pint itself.
UNIT_ALIASES: dict[str, str] = {
    # temperature
    "Cel": "degC",
    "°C": "degC",
    "degC": "degC",
    "C": "degC",  # vendors mean Celsius, never coulomb, in a telemetry payload
    "°F": "degF",
    "degF": "degF",
    "F": "degF",
    "K": "kelvin",
    # ratios
    "%RH": "percent",
    "%": "percent",
    "%EL": "percent",
    "/": "dimensionless",  # SenML "ratio" (0..1)
    "ppm": "ppm",
    "ppb": "ppb",
    # length / level / rain
    "m": "meter",
    "cm": "centimeter",
    "mm": "millimeter",
    "km": "kilometer",
    "ft": "foot",
    "in": "inch",
    # speed
    "km/h": "kilometer / hour",
    "kmh": "kilometer / hour",
    "kph": "kilometer / hour",
    "m/s": "meter / second",
    "kn": "knot",
    "kt": "knot",
    "knot": "knot",
    "knots": "knot",
    "mph": "mile / hour",
    # electrical
    "V": "volt",
    "mV": "millivolt",
    "kV": "kilovolt",
    "A": "ampere",
    "mA": "milliampere",
    "W": "watt",
    "kW": "kilowatt",
    "MW": "megawatt",
    "Wh": "watt_hour",
    "kWh": "kilowatt_hour",
    "MWh": "megawatt_hour",
    "J": "joule",
    # concentration
    "ug/m3": "microgram / meter ** 3",
    "µg/m3": "microgram / meter ** 3",
    "μg/m3": "microgram / meter ** 3",
    "µg/m³": "microgram / meter ** 3",
    "ug/m^3": "microgram / meter ** 3",
    "mg/m3": "milligram / meter ** 3",
    # pressure, angle
    "Pa": "pascal",
    "hPa": "hectopascal",
    "kPa": "kilopascal",
    "deg": "degree",
    "°": "degree",
    "rad": "radian",
}

# The unit of every canonical numeric field (the feed schemas put it in the name). Fields absent here are
# unitless (booleans, counts, power_factor): a declared unit for them is a profile error.
CANONICAL_UNITS: dict[str, str] = {
    "pm25_ugm3": "ug/m3",
    "pm10_ugm3": "ug/m3",
    "o3_ppb": "ppb",
    "co_ppm": "ppm",
    "no2_ppb": "ppb",
    "so2_ppb": "ppb",
    "temperature_c": "degC",
    "humidity_pct": "%",
    "level_m": "m",
    "rain_mm": "mm",
    "battery_pct": "%",
    "energy_kwh": "kWh",
    "power_kw": "kW",
    "voltage_v": "V",
    "current_a": "A",
    "lat": "deg",
    "lon": "deg",
    "speed_kmh": "km/h",
    "heading_deg": "deg",
}


class UnitError(ValueError):
    """An unknown unit, or two units that cannot be converted into each other."""


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    ureg: pint.UnitRegistry = pint.UnitRegistry()
    ureg.define("ppb = 1e-9 = parts_per_billion")
    return ureg


def pint_name(unit: str) -> str:
    """The pint spelling of a payload/profile unit (raises `UnitError` for a unit nobody knows)."""
    name = UNIT_ALIASES.get(unit.strip(), unit.strip())
    try:
        registry().Unit(name)
    except Exception as exc:  # pint's parser raises many kinds (TypeError on "a-b") for what a device may send
        raise UnitError(f"unknown unit {unit!r}") from exc
    return name


@lru_cache(maxsize=512)
def conversion(from_unit: str, to_unit: str) -> tuple[float, float]:
    """`(scale, offset)` with `value_in_to = value_in_from * scale + offset`, computed once with pint."""
    src, dst = pint_name(from_unit), pint_name(to_unit)
    if src == dst:
        return 1.0, 0.0
    q = registry().Quantity
    try:
        zero = float(q(0.0, src).to(dst).magnitude)
        one = float(q(1.0, src).to(dst).magnitude)
    except pint.errors.DimensionalityError:
        raise UnitError(f"cannot convert {from_unit!r} to {to_unit!r}: different dimensions") from None
    return one - zero, zero


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert one value (uses the cached affine pair)."""
    scale, offset = conversion(from_unit, to_unit)
    return value * scale + offset


def canonical_unit(field: str) -> str | None:
    """The unit a canonical field is stored in, or None when it is unitless."""
    return CANONICAL_UNITS.get(field)


__all__ = ["CANONICAL_UNITS", "UNIT_ALIASES", "UnitError", "canonical_unit", "conversion", "convert", "pint_name"]
