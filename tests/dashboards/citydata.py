"""Simulated city data for the dashboard tests: the last hours of a small Laem Chabang, as nakhon stores it.

Readings come from `nakhon.sim` (incidents triggered so that alerts happen), are validated by the feed schemas,
enriched by `collectors.domain.default_enrichers()` (so the derived fields exist) and replayed through the real
rules engine (`rules/defaults`, a replay clock) whose `alerts` points are stored beside them. One bus and one
energy meter go silent 40 minutes before the end, so their heartbeat rules fire (energy's other rules depend on
the time of day the tests run: on-peak demand).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from collectors.domain import default_enrichers
from collectors.feeds import FEED_SPECS
from collectors.sinks.influx import InfluxV1Sink
from core.model import DeviceInfo, Point, Reading
from nakhon.sim.city import City, SimDevice
from nakhon.sim.signals import Simulation
from rules.check import load_rules_dir
from rules.engine import RulesEngine
from rules.store import AlertStore
from rules.timeutil import FakeClock

HOURS = 7.0
STEP_S = 60
SILENT_FOR_S = 40 * 60
N_DEVICES = 20  # 6 air, 4 flood, 6 energy, 4 bus


@dataclass
class CityData:
    devices: list[SimDevice]
    points: list[Point] = field(default_factory=list)
    alerts: list[Point] = field(default_factory=list)
    end_ns: int = 0

    @property
    def silent_devices(self) -> dict[str, str]:
        """feed -> the device that stops reporting SILENT_FOR_S before the end."""
        return {feed: [d for d in self.devices if d.feed == feed][-1].device_id for feed in ("bus", "energy")}


def device_info(d: SimDevice) -> DeviceInfo:
    return DeviceInfo(d.device_id, d.feed, d.city, d.district, name=d.name, lat=d.lat, lon=d.lon, site=dict(d.site))


async def generate(alerts_db_url: str, *, end_ms: int | None = None) -> CityData:
    devices = City(seed=1).devices(N_DEVICES)
    end = end_ms if end_ms is not None else int(time.time() * 1000) - 30_000
    start = end - int(HOURS * 3600 * 1000)
    sim = Simulation(devices, seed=1)
    buses = [d for d in devices if d.feed == "bus"]
    floods = [d for d in devices if d.feed == "flood"]
    sim.trigger("haze", start + 3_600_000, duration_s=3 * 3600, district=devices[0].district)
    sim.trigger("canal_rise", start + 3_600_000, duration_s=4 * 3600, device_id=floods[0].device_id)
    sim.trigger("speeding", end - 90 * 60_000, duration_s=15 * 60, device_id=buses[0].device_id)
    sim.trigger("child_left", end - 30 * 60_000, duration_s=40 * 60, device_id=buses[1].device_id)
    sim.trigger("meter_spike", end - 120 * 60_000, duration_s=30 * 60)

    enrichers = default_enrichers()
    infos = {d.device_id: device_info(d) for d in devices}
    data = CityData(devices)
    clock = FakeClock(start * 1_000_000)
    store = AlertStore(alerts_db_url)

    async def emit(point: Point) -> None:
        data.alerts.append(point)

    engine = RulesEngine(load_rules_dir(None), store, None, emit, clock=clock,
                         devices=lambda: list(infos.values()))
    silent_from = end - SILENT_FOR_S * 1000
    silent = set(data.silent_devices.values())
    try:
        for ts_ms in range(start, end + 1, STEP_S * 1000):
            clock.set(ts_ms * 1_000_000)
            for d in devices:
                if d.device_id in silent and ts_ms >= silent_from:
                    continue
                model = FEED_SPECS[d.feed].model.model_validate(sim.reading(d, ts_ms))
                fields = model.model_dump(exclude_none=True)
                reading = Reading(d.device_id, d.feed, d.city, d.district, ts_ms * 1_000_000, fields)
                enrichers[d.feed].enrich(reading, infos[d.device_id])
                data.points.append(reading.to_point())
                await engine.process(reading, infos[d.device_id])
            await engine.tick(ts_ms * 1_000_000)
    finally:
        store.close()
    data.end_ns = end * 1_000_000
    return data


async def write(url: str, database: str, points: list[Point]) -> None:
    sink = InfluxV1Sink(url, database)
    try:
        for i in range(0, len(points), 5000):
            await sink.write(points[i : i + 5000])
    finally:
        await sink.close()


def load(url: str, database: str, alerts_db_url: str) -> CityData:
    data = asyncio.run(generate(alerts_db_url))
    asyncio.run(write(url, database, data.points + data.alerts))
    return data
