"""Bangkok calendar days for the simulator: working days, seasons and Thai public holidays.

Asia/Bangkok is UTC+7 all year (no daylight saving), so local time is computed with a fixed offset (core.time).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

from core.time import BANGKOK_UTC_OFFSET_S, is_thai_holiday

DAY_S = 86_400
DRY_SEASON_MONTHS = frozenset({12, 1, 2, 3, 4})  # north-east monsoon + hot season: haze
WET_SEASON_MONTHS = frozenset({5, 6, 7, 8, 9, 10})  # south-west monsoon: afternoon showers

@dataclass(frozen=True, slots=True)
class LocalDay:
    """A calendar day in Asia/Bangkok: `day` is days since 1970-01-01 (local), `start_s` its UTC epoch second."""

    day: int
    start_s: int
    weekday: int  # Monday = 0
    month: int
    holiday: bool

    @property
    def workday(self) -> bool:
        return self.weekday < 5 and not self.holiday

    @property
    def dry(self) -> bool:
        return self.month in DRY_SEASON_MONTHS

    @property
    def wet(self) -> bool:
        return self.month in WET_SEASON_MONTHS


@lru_cache(maxsize=4096)
def local_day(day: int) -> LocalDay:
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    holiday = is_thai_holiday(date)  # Thai public holidays are non-working days (energy profiles, school runs)
    return LocalDay(day, day * DAY_S - BANGKOK_UTC_OFFSET_S, date.weekday(), date.month, holiday)


def bangkok(ts_ms: int) -> tuple[LocalDay, float]:
    """The Bangkok calendar day of `ts_ms` and the local hour of day (0 ≤ hour < 24, fractional)."""
    local_s = ts_ms / 1000 + BANGKOK_UTC_OFFSET_S
    day = int(local_s // DAY_S)
    return local_day(day), (local_s - day * DAY_S) / 3600


def bangkok_ms(year: int, month: int, day: int, hour: float = 0.0) -> int:
    """Epoch ms of a Bangkok local date and hour (for tests and demos)."""
    days = (dt.date(year, month, day) - dt.date(1970, 1, 1)).days
    return int((days * DAY_S - BANGKOK_UTC_OFFSET_S + hour * 3600) * 1000)


__all__ = ["BANGKOK_UTC_OFFSET_S", "DAY_S", "LocalDay", "bangkok", "bangkok_ms", "local_day"]
