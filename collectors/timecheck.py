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

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

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


class TimePolicy(BaseModel):
    """How far ahead of the receive clock, and how far back, a reading's own time may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_future_s: float | None = Field(
        default=600.0, ge=0, description="Readings more than this ahead of the receive time are bad_time; "
        "None disables the check"
    )
    floor: datetime = Field(default=DEFAULT_FLOOR, description="Readings before this instant are bad_time")
    _floor_ns: int = PrivateAttr(0)
    _future_ns: int | None = PrivateAttr(None)

    def model_post_init(self, _context: object) -> None:
        # integers once, so the per-message check is two comparisons
        floor = self.floor if self.floor.tzinfo is not None else self.floor.replace(tzinfo=UTC)
        self._floor_ns = int(floor.timestamp()) * NS_PER_S
        self._future_ns = None if self.max_future_s is None else int(self.max_future_s * NS_PER_S)

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
