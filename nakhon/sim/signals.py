"""Realistic signals for the simulated city, in Asia/Bangkok time, plus incidents and malformed messages.

`Simulation` turns (device, simulated time) into one canonical message: a JSON object with `ts` (epoch ms)
and exactly the feed schema's field names and types. It is deterministic: the same devices, seed, incidents
and sequence of calls give the same messages. Each feed has its own generator (`air`, `flood`, `energy`, `bus`,
behind `feed.FeedSignals`); `Simulation` composes them with what they share (`feed.SharedSignals`: seed,
per-device random streams and parameters, the weather, incidents). State kept between calls: the energy
registers (integrated from the power profile), the rain gauges' "since the last report" totals and the
per-device random streams.

Asia/Bangkok is UTC+7 all year (no daylight saving), so local time is computed with a fixed offset.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from nakhon.sim.air import AirSignals
from nakhon.sim.bus import BusSignals
from nakhon.sim.city import SimDevice
from nakhon.sim.energy import EnergySignals
from nakhon.sim.feed import FeedSignals, SharedSignals
from nakhon.sim.flood import FloodSignals
from nakhon.sim.incidents import (
    INCIDENT_DURATION_S,
    INCIDENT_FEED,
    INCIDENT_KINDS,
    INCIDENT_SLOT,
    Incident,
    make_incident,
)
from nakhon.sim.localtime import DAY_S, LocalDay, bangkok, bangkok_ms, local_day

MALFORMED_KINDS: tuple[str, ...] = ("wrong_type", "out_of_range", "unknown_device")


def schedule_incidents(
    devices: list[SimDevice], start_ms: int, span_ms: int, *, seed: int = 1, kinds: Iterable[str] = INCIDENT_KINDS
) -> list[Incident]:
    """Every incident kind once per simulated day of the run (at least once), at fixed places in each round.

    Durations are the natural ones (haze 3 h, canal 4 h, speeding 6 min, meter spike 15 min, child left 20 min),
    shortened to fit a run shorter than a day: choose `--speed` so the run covers a few hours to see them whole.
    """
    rng = random.Random(f"incidents:{seed}")
    rounds = max(1, span_ms // (DAY_S * 1000))
    round_ms = span_ms / rounds
    out: list[Incident] = []
    for r in range(rounds):
        base = start_ms + r * round_ms
        for kind in kinds:
            at, share = INCIDENT_SLOT[kind]
            duration = min(INCIDENT_DURATION_S[kind], share * round_ms / 1000)
            if duration <= 0:
                continue
            incident = make_incident(kind, devices, int(base + at * round_ms), duration_s=duration, rng=rng)
            if incident is None:
                continue
            if kind in ("speeding", "child_left"):
                incident = _align_bus_incident(incident, devices, seed, int(base), int(base + round_ms))
            out.append(incident)
    return out


def _align_bus_incident(
    incident: Incident, devices: list[SimDevice], seed: int, round_start_ms: int, round_end_ms: int
) -> Incident:
    """Move a bus incident to where it belongs when the run has room: speeding while the bus is driving a
    school run, child left when the engine is switched off at the end of a run (the first such moment after
    the planned start, else the first in the round). Unchanged when the round has no such moment."""
    device = next(d for d in devices if d.device_id == incident.device_ids[0])
    probe = BusSignals(SharedSignals(seed))
    length = incident.end_ms - incident.start_ms
    step = 30_000
    for begin, end in ((incident.start_ms, round_end_ms - length), (round_start_ms, incident.start_ms)):
        previous = probe.state(device, begin / 1000)
        for t in range(begin + step, end, step):
            state = probe.state(device, t / 1000)
            speeding = incident.kind == "speeding" and state["moving"]
            switched_off = incident.kind == "child_left" and previous["ignition"] and not state["ignition"]
            if speeding or switched_off:
                return Incident(
                    incident.kind, t, t + length, incident.device_ids, incident.district, incident.magnitude
                )
            previous = state
    return incident


# --------------------------------------------------------------------------------------------------- messages


@dataclass(slots=True)
class SimMessage:
    """One message: its topic, the device named in it, the simulated time and the JSON object."""

    topic: str
    device_id: str
    feed: str
    ts_ms: int
    payload: dict[str, Any]
    malformed: str | None = None  # None, or one of MALFORMED_KINDS

    def encode(self) -> bytes:
        return orjson.dumps(self.payload)


class Simulation:
    """Signals for `devices`: `reading(device, ts)` gives the canonical fields, `next_message(ts)` a message.

    `malformed_rate` (0–1) is the exact long-run fraction of messages that are malformed: message k (1-based) is
    malformed when ⌊k·rate⌋ grows, so after N messages ⌊N·rate⌋ are. Kinds: a wrong JSON type, a value out of the
    schema's range, or a valid payload from a device that is not registered.
    """

    def __init__(
        self,
        devices: list[SimDevice],
        *,
        seed: int = 1,
        malformed_rate: float = 0.0,
        incidents: Iterable[Incident] = (),
        nominal_voltage_v: float = 230.0,
    ) -> None:
        if not 0.0 <= malformed_rate <= 1.0:
            raise ValueError("malformed_rate must be within 0–1")
        self.devices = list(devices)
        self.seed = seed
        self.malformed_rate = malformed_rate
        self.nominal_voltage_v = nominal_voltage_v
        self.incidents: list[Incident] = []
        self._shared = SharedSignals(seed)
        self._feeds: dict[str, FeedSignals] = {
            signals.feed: signals
            for signals in (
                AirSignals(self._shared),
                FloodSignals(self._shared),
                EnergySignals(self._shared, nominal_voltage_v=nominal_voltage_v),
                BusSignals(self._shared),
            )
        }
        for incident in incidents:
            self.add_incident(incident)
        self._order = self._interleave(self.devices)
        self._next = 0
        self._round = 0
        self._sent = 0
        self._malformed = 0
        self._rng_malformed = random.Random(f"malformed:{seed}")
        self._last_ts: dict[str, int] = {}

    # ------------------------------------------------------------------ public API

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def malformed(self) -> int:
        return self._malformed

    def add_incident(self, incident: Incident) -> Incident:
        self.incidents.append(incident)
        self._shared.add_incident(incident)
        return incident

    def trigger(
        self,
        kind: str,
        at_ms: int,
        *,
        duration_s: float | None = None,
        device_id: str | None = None,
        district: str | None = None,
    ) -> Incident:
        """Start an incident now (`at_ms`, simulated time) on a chosen or given device / district."""
        incident = make_incident(
            kind, self.devices, at_ms, duration_s=duration_s, device_id=device_id, district=district,
            rng=random.Random(f"trigger:{self.seed}:{kind}:{at_ms}:{len(self.incidents)}"),
        )  # fmt: skip
        if incident is None:
            raise ValueError(f"no {INCIDENT_FEED[kind]} devices for incident {kind}")
        return self.add_incident(incident)

    def reading(self, device: SimDevice, ts_ms: int) -> dict[str, Any]:
        """The canonical fields of `device` at simulated time `ts_ms` (no `ts`), incidents applied."""
        day, hour = bangkok(ts_ms)
        rng = self._shared.rng(device.device_id)
        of_device = self._shared.incidents(device.device_id)
        incidents = [i for i in of_device if i.active(ts_ms)] if of_device else []  # most devices have none
        try:
            signals = self._feeds[device.feed]
        except KeyError:
            raise ValueError(f"unknown feed {device.feed!r}") from None
        return signals.reading(device, ts_ms, day, hour, rng, incidents)

    def message(self, device: SimDevice, ts_ms: int) -> SimMessage:
        """A message of `device` at `ts_ms` (made strictly increasing per device); may be malformed."""
        last = self._last_ts.get(device.device_id)
        if last is not None and ts_ms <= last:
            ts_ms = last + 1
        self._last_ts[device.device_id] = ts_ms
        payload: dict[str, Any] = {"ts": ts_ms}
        payload.update(self.reading(device, ts_ms))
        self._sent += 1
        if self.malformed_rate and int(self._sent * self.malformed_rate + 1e-9) > self._malformed:
            self._malformed += 1
            return self._malform(device, ts_ms, payload)
        return SimMessage(device.topic, device.device_id, device.feed, ts_ms, payload)

    def next_message(self, ts_ms: int) -> SimMessage:
        """The next device in round-robin order (feeds interleaved) reports at `ts_ms`."""
        n = len(self._order)
        # Each round starts one device later than the one before: every device still reports once per round,
        # but the every-k-th malformed message falls on a different device each round (with 200 devices and
        # 1 % malformed, messages 100 and 200 of every round were always the same two devices — which then
        # never sent one good reading and were, truly, silent).
        device = self._order[(self._next + self._round) % n]
        self._next += 1
        if self._next == n:
            self._next, self._round = 0, self._round + 1
        return self.message(device, ts_ms)

    def messages(self, count: int, start_ms: int, interval_ms: float) -> Iterator[SimMessage]:
        """`count` messages, one every `interval_ms` of simulated time, round-robin over the devices."""
        for i in range(count):
            yield self.next_message(int(start_ms + i * interval_ms))

    def normal_canal_level(self, device: SimDevice, ts_ms: int) -> float:
        """The gauge's level without incidents or noise (m, site datum)."""
        flood = self._feeds["flood"]
        assert isinstance(flood, FloodSignals)
        return flood.normal_canal_level(device, ts_ms)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _interleave(devices: list[SimDevice]) -> list[SimDevice]:
        by_feed: dict[str, list[SimDevice]] = {}
        for d in devices:
            by_feed.setdefault(d.feed, []).append(d)
        order: list[SimDevice] = []
        queues = list(by_feed.values())
        longest = max((len(q) for q in queues), default=0)
        for i in range(longest):
            order.extend(q[i] for q in queues if i < len(q))
        return order

    # ------------------------------------------------------------------ malformed

    def _malform(self, device: SimDevice, ts_ms: int, payload: dict[str, Any]) -> SimMessage:
        r = self._rng_malformed
        kind = r.choices(MALFORMED_KINDS, weights=(0.4, 0.4, 0.2))[0]
        if kind == "unknown_device":
            ghost = f"{device.device_id.rsplit('-', 1)[0]}-ghost-{r.randint(900, 999)}"
            topic = f"city/{device.city}/{device.feed}/{ghost}"
            return SimMessage(topic, ghost, device.feed, ts_ms, payload, kind)
        bad = dict(payload)
        if kind == "wrong_type":
            name = r.choice([k for k in payload if k != "ts"])
            value = payload[name]
            # A bool as "on"/"off", a number as a string: what vendor payloads do before a profile maps them.
            bad[name] = ("on" if value else "off") if isinstance(value, bool) else str(value)
        else:
            name, lo, hi = r.choice(self._feeds[device.feed].out_of_range)
            bad[name] = round(r.uniform(lo, hi), 2)
        return SimMessage(device.topic, device.device_id, device.feed, ts_ms, bad, kind)


__all__ = [
    "INCIDENT_KINDS",
    "MALFORMED_KINDS",
    "Incident",
    "LocalDay",
    "SimMessage",
    "Simulation",
    "bangkok",
    "bangkok_ms",
    "local_day",
    "make_incident",
    "schedule_incidents",
]
