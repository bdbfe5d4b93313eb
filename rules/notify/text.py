"""How numbers, units, durations and AQI bands read in Thai and in English (the filters of the templates).

Every filter exists in both languages under the same name, so a rule's `summary_th` and `summary_en` are
written alike and each reads naturally: `{{ for | duration }}` is "5 นาที" in Thai and "5 min" in English,
`{{ value | qty('kmh') }}` is "78 กม./ชม." / "78 km/h". The words used are listed in
`rules/templates/GLOSSARY.md`; `tests/rules/notify/test_text.py` checks the two stay in step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from collectors.domain.aqi import thai_band

LANGUAGES = ("th", "en")

# Unit codes a template may name in `qty(...)`: (Thai, English, separator before the unit in th / en).
UNITS: dict[str, tuple[str, str]] = {
    "ugm3": ("µg/m³", "µg/m³"),
    "ppb": ("ppb", "ppb"),
    "ppm": ("ppm", "ppm"),
    "c": ("°C", "°C"),
    "pct": ("%", "%"),
    "m": ("ม.", "m"),
    "cm": ("ซม.", "cm"),
    "mm": ("มม.", "mm"),
    "km": ("กม.", "km"),
    "kmh": ("กม./ชม.", "km/h"),
    "kw": ("กิโลวัตต์", "kW"),
    "kwh": ("หน่วย (kWh)", "kWh"),
    "v": ("โวลต์", "V"),
    "a": ("แอมแปร์", "A"),
    "people": ("คน", "people"),
}
_NO_SPACE = {"pct", "c"}  # "104%", "31.5°C" in both languages

# Durations: (seconds, Thai word, English singular, English plural).
_DURATION_PARTS = (
    (86400, "วัน", "day", "days"),
    (3600, "ชั่วโมง", "h", "h"),
    (60, "นาที", "min", "min"),
    (1, "วินาที", "s", "s"),
)

# PCD colour names (thailand.md, "Bands"): the band's `colour` from collectors/domain/aqi.py, in Thai.
COLOUR_TH = {"blue": "ฟ้า", "green": "เขียว", "yellow": "เหลือง", "orange": "ส้ม", "red": "แดง"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def num(value: Any, digits: int = 2) -> str:
    """`1,234.5` — thousands separated, at most `digits` decimals, no trailing zeros (Thai uses the same)."""
    v = _number(value)
    if v is None:
        return "-"
    if abs(v) >= 1e6:
        return f"{v:,.0f}"
    text = f"{v:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def qty(value: Any, unit: str, language: str, digits: int = 2) -> str:
    """A number with its unit in `language`: qty(78.2, 'kmh', 'th') -> '78.2 กม./ชม.'."""
    try:
        th, en = UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown unit {unit!r}; known: {', '.join(UNITS)}") from None
    word = th if language == "th" else en
    sep = "" if unit in _NO_SPACE else " "
    return f"{num(value, digits)}{sep}{word}"


def duration(seconds: Any, language: str) -> str:
    """`1 ชั่วโมง 5 นาที` / `1 h 5 min`: the two largest units, rounded to the smaller of them."""
    v = _number(seconds)
    if v is None:
        return "-"
    total = max(0, round(v))
    if total == 0:
        return "0 วินาที" if language == "th" else "0 s"
    i = next(k for k, part in enumerate(_DURATION_PARTS) if total >= part[0])
    if i + 1 < len(_DURATION_PARTS):
        step = _DURATION_PARTS[i + 1][0]
        total = round(total / step) * step
    parts: list[str] = []
    for size, th, en_one, en_many in _DURATION_PARTS[i : i + 2]:
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count} {th if language == 'th' else (en_one if count == 1 else en_many)}")
    return " ".join(parts)


def aqi_band(value: Any, language: str) -> str:
    """The PCD band wording of a Thai AQI value: 217 -> 'มีผลกระทบต่อสุขภาพ' / 'Affects health'."""
    v = _number(value)
    if v is None:
        return "-"
    band = thai_band(round(v))
    return band.name_th if language == "th" else band.name_en.lower()


def aqi_colour(value: Any, language: str) -> str:
    """The PCD band colour of a Thai AQI value: 217 -> 'แดง' / 'red'."""
    v = _number(value)
    if v is None:
        return "-"
    band = thai_band(round(v))
    return COLOUR_TH[band.colour] if language == "th" else band.colour


def filters(language: str) -> dict[str, Callable[..., str]]:
    """The language-dependent template filters (the same names in both languages)."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}")

    def _qty(value: Any, unit: str, digits: int = 2) -> str:
        return qty(value, unit, language, digits)

    def _duration(seconds: Any) -> str:
        return duration(seconds, language)

    def _band(value: Any) -> str:
        return aqi_band(value, language)

    def _colour(value: Any) -> str:
        return aqi_colour(value, language)

    return {"num": num, "qty": _qty, "duration": _duration, "aqi_band": _band, "aqi_colour": _colour}


FILTER_NAMES = frozenset(filters("th"))
