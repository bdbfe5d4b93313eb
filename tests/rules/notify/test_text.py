"""Thai and English formatting of numbers, units, durations and AQI bands (rules/notify/text.py)."""

from __future__ import annotations

import pytest

from rules.notify.text import FILTER_NAMES, UNITS, aqi_band, aqi_colour, duration, num, qty


@pytest.mark.parametrize(
    ("seconds", "th", "en"),
    [
        (41, "41 วินาที", "41 s"),
        (300, "5 นาที", "5 min"),
        (615, "10 นาที 15 วินาที", "10 min 15 s"),
        (3600, "1 ชั่วโมง", "1 h"),
        (3900, "1 ชั่วโมง 5 นาที", "1 h 5 min"),
        (3725, "1 ชั่วโมง 2 นาที", "1 h 2 min"),
        (86400 + 3 * 3600, "1 วัน 3 ชั่วโมง", "1 day 3 h"),
        (2 * 86400, "2 วัน", "2 days"),
    ],
)
def test_durations_read_naturally_in_thai_and_english(seconds: float, th: str, en: str) -> None:
    # "นาน 41s", "ต่อเนื่อง 1h" were English units in Thai text
    assert duration(seconds, "th") == th and duration(seconds, "en") == en


@pytest.mark.parametrize(
    ("aqi", "th", "colour_th", "en", "colour_en"),
    [
        (12, "ดีมาก", "ฟ้า", "very good", "blue"),
        (40, "ดี", "เขียว", "good", "green"),
        (75, "ปานกลาง", "เหลือง", "moderate", "yellow"),
        (150, "เริ่มมีผลกระทบต่อสุขภาพ", "ส้ม", "starting to affect health", "orange"),
        (217, "มีผลกระทบต่อสุขภาพ", "แดง", "affects health", "red"),  # was described with the orange wording
        (200, "เริ่มมีผลกระทบต่อสุขภาพ", "ส้ม", "starting to affect health", "orange"),
        (201, "มีผลกระทบต่อสุขภาพ", "แดง", "affects health", "red"),
    ],
)
def test_aqi_wording_and_colour_follow_the_value_in_all_five_bands(
    aqi: int, th: str, colour_th: str, en: str, colour_en: str
) -> None:
    assert (aqi_band(aqi, "th"), aqi_colour(aqi, "th")) == (th, colour_th)
    assert (aqi_band(aqi, "en"), aqi_colour(aqi, "en")) == (en, colour_en)


def test_numbers_and_units() -> None:
    assert num(27.799999999999997) == "27.8" and num(1234.5) == "1,234.5" and num(60.0) == "60"
    assert num(None) == "-" and num(True) == "-" and num(float("nan")) == "-"
    assert qty(78.24, "kmh", "th") == "78.24 กม./ชม." and qty(78.24, "kmh", "en", 0) == "78 km/h"
    assert qty(2.35, "m", "th") == "2.35 ม." and qty(1250, "kw", "th") == "1,250 กิโลวัตต์"
    assert qty(42.5, "ugm3", "th") == "42.5 µg/m³" and qty(104.26, "pct", "en", 0) == "104%"
    with pytest.raises(ValueError, match="unknown unit"):
        qty(1, "furlong", "en")


def test_both_languages_have_the_same_filters_and_every_unit_in_both() -> None:
    from rules.notify.text import filters

    assert set(filters("th")) == set(filters("en")) == FILTER_NAMES
    assert all(th and en for th, en in UNITS.values())


def test_the_glossary_lists_every_thai_word_the_messages_use() -> None:
    from pathlib import Path

    from collectors.domain.aqi import THAI_BANDS
    from rules.labels import FEED_TH, KIND_TH, SEVERITY_TH, STATE_TH
    from rules.notify.text import _DURATION_PARTS, COLOUR_TH

    glossary = (Path(__file__).parents[3] / "rules" / "templates" / "GLOSSARY.md").read_text(encoding="utf-8")
    words = [*SEVERITY_TH.values(), *STATE_TH.values(), *KIND_TH.values(), *FEED_TH.values(), *COLOUR_TH.values()]
    words += [th for th, _en in UNITS.values()] + [part[1] for part in _DURATION_PARTS]
    words += [band.name_th for band in THAI_BANDS]
    missing = [w for w in words if w not in glossary]
    assert missing == []
