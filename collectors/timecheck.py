"""Event-time plausibility: a reading's time must be storable and believable before anything uses it.

A device whose clock is wrong (RTC lost after a power cut → 1970 or 2000; a GPS week rollover; a bad NTP
answer → 2100) must not have its reading stored at that time, nor let it move per-device state (rolling
means, register baselines, trip timers) to a time no later reading can follow. Such readings are quarantined
`bad_time` with the reason, before the feed schema and the enrichers see them.

Checks, relative to the time the collector received the message (its own clock):

* more than `max_future_s` (default 10 min) ahead → `bad_time` "... in the future";
* before `floor` (default 2015-01-01T00:00:00Z; configurable: backfills of older data lower it) → `bad_time`;
* outside what InfluxDB can store (int64 nanoseconds minus its two reserved values: about 1677-09-21 to
  2262-04-11) → `bad_time`, never a sink rejection later.
"""

from __future__ import annotations

from datetime import UTC, datetime

from collectors.errors import RejectedMessage

NS_PER_S = 1_000_000_000
# InfluxDB's time range: int64 nanoseconds without its reserved min and max values
# (models.MinNanoTime = math.MinInt64 + 2, models.MaxNanoTime = math.MaxInt64 - 1).
INFLUX_MIN_NS = -(2**63) + 2
INFLUX_MAX_NS = 2**63 - 2
DEFAULT_FLOOR = datetime(2015, 1, 1, tzinfo=UTC)


def _iso(time_ns: int) -> str:
    try:
        return datetime.fromtimestamp(time_ns / NS_PER_S, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{time_ns} ns"


class TimePolicy:
    """How far ahead of the receive clock, and how far back, a reading's own time may be.

    A plain slotted object (not pydantic): `check` runs for every message, and reads two precomputed ints.
    `[domain] time_max_future_s` / `time_floor` in nakhon.toml are validated by `DomainConfig`."""

    __slots__ = ("_floor_ns", "_future_ns", "floor", "max_future_s")

    def __init__(self, max_future_s: float | None = 600.0, floor: datetime = DEFAULT_FLOOR) -> None:
        if max_future_s is not None and max_future_s < 0:
            raise ValueError("max_future_s must be >= 0 (or None to disable the check)")
        self.max_future_s = max_future_s
        self.floor = floor if floor.tzinfo is not None else floor.replace(tzinfo=UTC)
        self._floor_ns = int(self.floor.timestamp()) * NS_PER_S
        self._future_ns = None if max_future_s is None else int(max_future_s * NS_PER_S)

    def check(self, time_ns: int, received_ns: int, field: str = "time") -> None:
        """Raise `RejectedMessage("bad_time")` naming the time and the limit it breaks."""
        if not INFLUX_MIN_NS <= time_ns <= INFLUX_MAX_NS:
            raise RejectedMessage(
                "bad_time", f"{field} {_iso(time_ns)} is outside the range InfluxDB can store (1677-09-21 to "
                "2262-04-11)"
            )
        future_ns = self._future_ns
        if future_ns is not None and time_ns - received_ns > future_ns:
            ahead_s = (time_ns - received_ns) / NS_PER_S
            raise RejectedMessage(
                "bad_time", f"{field} {_iso(time_ns)} is {ahead_s:.0f} s in the future (received "
                f"{_iso(received_ns)}; allowed skew {self.max_future_s:g} s): device clock wrong?"
            )
        if time_ns < self._floor_ns:
            raise RejectedMessage(
                "bad_time", f"{field} {_iso(time_ns)} is before the earliest accepted time "
                f"{_iso(self._floor_ns)} (device clock reset?)"
            )


__all__ = ["DEFAULT_FLOOR", "INFLUX_MAX_NS", "INFLUX_MIN_NS", "TimePolicy"]
