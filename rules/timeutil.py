"""Time helpers: durations in rule files, the injected clock, and Asia/Bangkok display (with Buddhist-era years).

Times are stored and passed as UTC nanoseconds since the epoch; only display converts to Asia/Bangkok.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from pydantic import BeforeValidator

from core.time import BANGKOK, BE_OFFSET, NS, THAI_MONTHS_ABBR

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `90.5`, `"30s"`, `"5m"`, `"1h30m"`, `"2d"` (Prometheus style). Never negative."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if not text:
            raise ValueError("empty duration")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text):
                raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h30m, 2d") from None
    else:
        raise ValueError("a duration must be a number of seconds or a string like '5m'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in YAML as a number or a string like `5m`."""


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()


class FakeClock:
    """A settable clock for tests and replays."""

    def __init__(self, start_ns: int = 0) -> None:
        self.t = start_ns

    def now_ns(self) -> int:
        return self.t

    def set(self, t_ns: int) -> None:
        self.t = t_ns

    def advance(self, seconds: float) -> int:
        self.t += int(seconds * NS)
        return self.t


def to_utc(t_ns: int) -> datetime:
    return datetime.fromtimestamp(t_ns / NS, tz=UTC)


def to_bangkok(t_ns: int) -> datetime:
    return datetime.fromtimestamp(t_ns / NS, tz=BANGKOK)


def ns_from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * NS + dt.microsecond * 1000


def format_th(t_ns: int) -> str:
    """`21 พ.ย. 2569 14:05 น.` — Asia/Bangkok, Buddhist-era year."""
    dt = to_bangkok(t_ns)
    return f"{dt.day} {THAI_MONTHS_ABBR[dt.month - 1]} {dt.year + BE_OFFSET} {dt:%H:%M} น."


def format_en(t_ns: int) -> str:
    """`2026-11-21 14:05 (Asia/Bangkok, UTC+7)`."""
    dt = to_bangkok(t_ns)
    return f"{dt:%Y-%m-%d %H:%M} (Asia/Bangkok)"


def parse_time_ns(value: Any) -> int:
    """A timestamp from JSON: ISO-8601 (naive = UTC), or epoch seconds / ms / ns by magnitude."""
    if isinstance(value, bool):
        raise ValueError("invalid timestamp")
    if isinstance(value, int | float):
        v = float(value)
        if v > 1e17:
            return int(value)
        if v > 1e14:
            return int(v * 1_000)
        if v > 1e11:
            return int(v * 1_000_000)
        return int(v * NS)
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_time_ns(float(text))
        except ValueError:
            pass
        return ns_from_datetime(datetime.fromisoformat(text.replace("Z", "+00:00")))
    raise ValueError(f"invalid timestamp {value!r}")
