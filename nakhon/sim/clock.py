"""Simulated time for a run faster than real time, shared by the publisher and the rules engine.

    clock = SimClock(start_ms, speed)      # simulated ms = start + speed × (wall elapsed), never past the wall clock
    clock.now_ns()                         # a rules.timeutil.Clock: `for:`, heartbeats and reminders in sim time

A run that starts in the past and goes `speed` times faster catches up with the real clock and then goes on in
real time: simulated time never runs into the future (the collectors refuse readings from the future, and a
dashboard must not show them). The rules engine must run on the same clock as the readings' `ts`: on the wall
clock, an hour-old simulated reading would be "silent for an hour" the moment it arrives.
"""

from __future__ import annotations

import time


class SimClock:
    def __init__(self, start_ms: int, speed: float, wall0_ms: float | None = None) -> None:
        self.start_ms = start_ms
        self.speed = speed
        self.wall0_ms = time.time() * 1000 if wall0_ms is None else wall0_ms

    def now_ms(self) -> int:
        wall = time.time() * 1000
        return int(min(wall, self.start_ms + self.speed * (wall - self.wall0_ms)))

    def now_ns(self) -> int:
        return self.now_ms() * 1_000_000


def catch_up_start_ms(speed: float, catch_up_s: float, now_ms: float | None = None) -> int:
    """Where simulated time starts so that it reaches the real now after `catch_up_s` seconds of the run."""
    now = time.time() * 1000 if now_ms is None else now_ms
    return int(now - max(0.0, speed - 1) * catch_up_s * 1000)


__all__ = ["SimClock", "catch_up_start_ms"]
