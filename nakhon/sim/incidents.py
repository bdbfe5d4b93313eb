"""Incidents: something worth an alert in simulated time, on a device or a district (haze, canal rise,
speeding, meter spike, child left on a bus). `schedule_incidents` (in `signals`) places them in a run."""

from __future__ import annotations

import random
from dataclasses import dataclass

from nakhon.sim.city import SimDevice

INCIDENT_KINDS: tuple[str, ...] = ("haze", "canal_rise", "speeding", "meter_spike", "child_left")
INCIDENT_FEED = {"haze": "air", "canal_rise": "flood", "speeding": "bus", "meter_spike": "energy", "child_left": "bus"}
# Natural durations in simulated time; shortened (never lengthened) to fit a short run.
INCIDENT_DURATION_S = {"haze": 3 * 3600, "canal_rise": 4 * 3600, "speeding": 6 * 60, "meter_spike": 15 * 60,
                       "child_left": 20 * 60}  # fmt: skip
# Where each incident starts inside a round of the run (fraction of the round) and its share of the round at most.
INCIDENT_SLOT = {"haze": (0.05, 0.5), "canal_rise": (0.2, 0.4), "speeding": (0.4, 0.2), "meter_spike": (0.55, 0.2),
                  "child_left": (0.7, 0.25)}  # fmt: skip
CANAL_RISE_M_PER_S = 0.15 / 600  # ~15 cm per 10 min


@dataclass(frozen=True, slots=True)
class Incident:
    """Something worth an alert, in simulated time [start_ms, end_ms) on `device_ids`.

    `magnitude`: haze — target PM2.5 µg/m³; speeding — km/h; meter_spike — multiple of contracted kW;
    canal_rise — peak level above the bank, m; child_left — children left on board.
    """

    kind: str
    start_ms: int
    end_ms: int
    device_ids: tuple[str, ...]
    district: str = ""
    magnitude: float = 0.0

    def active(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.end_ms

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


def make_incident(
    kind: str,
    devices: list[SimDevice],
    start_ms: int,
    *,
    duration_s: float | None = None,
    device_id: str | None = None,
    district: str | None = None,
    rng: random.Random | None = None,
) -> Incident | None:
    """One incident of `kind` starting at `start_ms` on a chosen (or the given) device or district.

    Returns None when the devices include none of the incident's feed.
    """
    if kind not in INCIDENT_KINDS:
        raise ValueError(f"unknown incident {kind!r}; known: {', '.join(INCIDENT_KINDS)}")
    rng = rng or random.Random(f"incident:{kind}:{start_ms}:{device_id}:{district}")
    feed = INCIDENT_FEED[kind]
    pool = [d for d in devices if d.feed == feed]
    if device_id is not None:
        pool = [d for d in pool if d.device_id == device_id]
        if not pool:
            raise ValueError(f"no {feed} device {device_id!r} for incident {kind}")
    elif district is not None:
        pool = [d for d in pool if d.district == district] or pool
    if not pool:
        return None
    duration = INCIDENT_DURATION_S[kind] if duration_s is None else duration_s
    end_ms = start_ms + int(duration * 1000)
    if kind == "haze":
        chosen = district if district and device_id is None else rng.choice(pool).district
        ids = tuple(d.device_id for d in pool if d.district == chosen)
        return Incident(kind, start_ms, end_ms, ids, chosen, round(rng.uniform(95, 140), 1))
    target = rng.choice(pool)
    magnitude = {"canal_rise": rng.uniform(0.12, 0.3), "speeding": rng.uniform(78, 92),
                 "meter_spike": 3.0, "child_left": 1.0}[kind]  # fmt: skip
    return Incident(kind, start_ms, end_ms, (target.device_id,), target.district, round(magnitude, 2))


__all__ = [
    "CANAL_RISE_M_PER_S",
    "INCIDENT_DURATION_S",
    "INCIDENT_FEED",
    "INCIDENT_KINDS",
    "INCIDENT_SLOT",
    "Incident",
    "make_incident",
]
