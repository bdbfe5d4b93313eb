"""Rain for the simulated city: convective showers per district and Bangkok day, deterministic from the seed.

Shared by the feeds: air (washout), flood (rain gauges, canal response), energy (drainage pumps).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from nakhon.sim.localtime import BANGKOK_UTC_OFFSET_S, DAY_S, LocalDay, local_day

_RAIN_DAY_P = {1: 0.05, 2: 0.07, 3: 0.1, 4: 0.22, 5: 0.5, 6: 0.55, 7: 0.55, 8: 0.6, 9: 0.7, 10: 0.65, 11: 0.25,
               12: 0.06}  # fmt: skip


@dataclass(slots=True)
class Shower:
    start_s: float
    end_s: float
    mm_per_h: float


class Weather:
    """The showers of every district and day (cached), rain intensity, totals and the canals' response."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._showers: dict[tuple[str, int], list[Shower]] = {}

    def day_showers(self, district: str, day: int) -> list[Shower]:
        key = (district, day)
        showers = self._showers.get(key)
        if showers is None:
            ld = local_day(day)
            r = random.Random(f"rain:{self.seed}:{district}:{day}")
            showers = []
            if r.random() < _RAIN_DAY_P[ld.month]:
                # Convective showers: mostly afternoon / early evening, sometimes a second one at night.
                start_h = r.uniform(13.5, 18.5)
                showers.append(self._shower(ld, start_h, r))
                if r.random() < 0.2:
                    showers.append(self._shower(ld, r.uniform(0.5, 5.0), r))
            if len(self._showers) > 10_000:
                self._showers.clear()
            self._showers[key] = showers
        return showers

    @staticmethod
    def _shower(ld: LocalDay, start_h: float, r: random.Random) -> Shower:
        start = ld.start_s + start_h * 3600
        return Shower(start, start + r.uniform(0.5, 2.5) * 3600, r.uniform(4, 35))

    def showers_around(self, district: str, t_s: float, days_back: int) -> Iterator[Shower]:
        day = int((t_s + BANGKOK_UTC_OFFSET_S) // DAY_S)
        for d in range(day - days_back, day + 1):
            yield from self.day_showers(district, d)

    def intensity(self, district: str, t_s: float) -> float:
        return sum(s.mm_per_h for s in self.showers_around(district, t_s, 1) if s.start_s <= t_s < s.end_s)

    def between(self, district: str, a_s: float, b_s: float) -> float:
        """Rain (mm) that fell in the district during [a_s, b_s)."""
        if b_s <= a_s:
            return 0.0
        total = 0.0
        day_a = int((a_s + BANGKOK_UTC_OFFSET_S) // DAY_S)
        day_b = int((b_s + BANGKOK_UTC_OFFSET_S) // DAY_S)
        for d in range(day_a - 1, day_b + 1):
            for s in self.day_showers(district, d):
                overlap = min(b_s, s.end_s) - max(a_s, s.start_s)
                if overlap > 0:
                    total += s.mm_per_h * overlap / 3600
        return total

    def canal_response(self, district: str, t_s: float, depth: float) -> float:
        """Canal rise from recent rain: grows while it rains, then drains away (time constant 8 h)."""
        k = 0.012 * depth / 2.2  # m per mm
        rise = 0.0
        for s in self.showers_around(district, t_s, 2):
            if t_s <= s.start_s:
                continue
            fallen = s.mm_per_h * (min(t_s, s.end_s) - s.start_s) / 3600
            decay = math.exp(-(t_s - s.end_s) / (8 * 3600)) if t_s > s.end_s else 1.0
            rise += k * fallen * decay
        return rise


__all__ = ["Shower", "Weather"]
