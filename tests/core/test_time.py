"""One Asia/Bangkok and one Thai holiday calendar (core.time), as the tz database and `holidays` say."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays

from core.time import BANGKOK, BANGKOK_UTC_OFFSET_S, is_thai_holiday, thai_holiday_names


def test_bangkok_is_the_tz_database_zone_from_1920_on() -> None:
    zone = ZoneInfo("Asia/Bangkok")
    moment = datetime(1920, 4, 1, tzinfo=UTC)
    while moment.year < 2100:
        assert moment.astimezone(BANGKOK).utcoffset() == moment.astimezone(zone).utcoffset()
        assert moment.astimezone(BANGKOK).isoformat() == moment.astimezone(zone).isoformat()
        moment += timedelta(days=97, hours=5)
    assert BANGKOK_UTC_OFFSET_S == 7 * 3600


def test_holidays_are_the_thai_calendar_in_any_language() -> None:
    thai_named = holidays.country_holidays("TH", years=range(2024, 2028))  # the rules used the Thai names
    day = date(2024, 1, 1)
    while day.year < 2028:
        assert is_thai_holiday(day) == (day in thai_named)
        day += timedelta(days=1)


def test_a_substitution_day_is_a_holiday_named_in_lieu() -> None:
    names = {d: thai_holiday_names(d) for d in holidays.country_holidays("TH", years=2026)}
    in_lieu = [d for d, n in names.items() if any("(in lieu)" in name for name in n)]
    assert in_lieu, "holidays names substitution days '(in lieu)' in en_US: energy's TOU rule depends on it"
    assert all(is_thai_holiday(d) for d in in_lieu)
    assert thai_holiday_names(date(2026, 1, 6)) == [] and not is_thai_holiday(date(2026, 1, 6))
