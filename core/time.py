"""Time, once: nakhon stores and passes UTC (nanoseconds since the epoch) and shows Asia/Bangkok; the Thai
public-holiday calendar that rules, tariffs and the simulator share; the Buddhist-era words for Thai dates.

Asia/Bangkok is a fixed UTC+7: Thailand has kept it all year, without daylight saving, since 1920, so the
offset needs no tz database and costs the hot paths (TOU tariffs, the simulator) nothing. It matches
`zoneinfo.ZoneInfo("Asia/Bangkok")` for every time from 1920-04-01 on (before that the zone had local mean time).
"""

from __future__ import annotations

from datetime import date, timedelta, timezone
from functools import lru_cache

import holidays

NS = 1_000_000_000  # nanoseconds per second: stored times are UTC ns since the epoch
BANGKOK_UTC_OFFSET_S = 7 * 3600
BANGKOK = timezone(timedelta(seconds=BANGKOK_UTC_OFFSET_S), "Asia/Bangkok")

BE_OFFSET = 543  # Buddhist era = Common era + 543
THAI_MONTHS = (
    "มกราคม",
    "กุมภาพันธ์",
    "มีนาคม",
    "เมษายน",
    "พฤษภาคม",
    "มิถุนายน",
    "กรกฎาคม",
    "สิงหาคม",
    "กันยายน",
    "ตุลาคม",
    "พฤศจิกายน",
    "ธันวาคม",
)
THAI_MONTHS_ABBR = (
    "ม.ค.",
    "ก.พ.",
    "มี.ค.",
    "เม.ย.",
    "พ.ค.",
    "มิ.ย.",
    "ก.ค.",
    "ส.ค.",
    "ก.ย.",
    "ต.ค.",
    "พ.ย.",
    "ธ.ค.",
)


@lru_cache(maxsize=64)
def thai_holidays(year: int) -> holidays.HolidayBase:
    """Thailand's public holidays of `year` (`holidays.Thailand`), named in English: a substitution day
    (วันหยุดชดเชย) is named "<holiday> (in lieu)", which the TOU tariff tells apart."""
    return holidays.country_holidays("TH", years=year, language="en_US")


def is_thai_holiday(day: date) -> bool:
    """Whether `day` (a Bangkok calendar day) is a Thai public holiday, substitution days included."""
    return day in thai_holidays(day.year)


def thai_holiday_names(day: date) -> list[str]:
    """The holidays falling on `day`, in English (empty on an ordinary day)."""
    return thai_holidays(day.year).get_list(day)


__all__ = [
    "BANGKOK",
    "BANGKOK_UTC_OFFSET_S",
    "BE_OFFSET",
    "NS",
    "THAI_MONTHS",
    "THAI_MONTHS_ABBR",
    "is_thai_holiday",
    "thai_holiday_names",
    "thai_holidays",
]
