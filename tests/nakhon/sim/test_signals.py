"""Signals: every normal message validates, malformed ones are exactly the configured share, daily patterns
in Bangkok time look right, and every incident shows its signature."""

from __future__ import annotations

import datetime
import itertools
import statistics
import zoneinfo
from collections import Counter
from typing import Any

import pydantic
import pytest

from collectors.feeds import FEED_SPECS
from nakhon.sim.city import City, SimDevice
from nakhon.sim.signals import (
    INCIDENT_KINDS,
    Incident,
    Simulation,
    bangkok,
    bangkok_ms,
    schedule_incidents,
)

DRY_WEDNESDAY = (2026, 1, 14)  # a working Wednesday in the haze season
WET_WEDNESDAY = (2026, 8, 19)  # a working Wednesday in the rainy season
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def devices() -> list[SimDevice]:
    return City(seed=1).devices()


def validates(feed: str, payload: dict[str, Any]) -> bool:
    try:
        FEED_SPECS[feed].model.model_validate(payload)
    except pydantic.ValidationError:
        return False
    return True


def test_bangkok_time_is_utc_plus_7() -> None:
    ts = bangkok_ms(2026, 1, 14, 2.5)
    expected = datetime.datetime(2026, 1, 14, 2, 30, tzinfo=zoneinfo.ZoneInfo("Asia/Bangkok"))
    assert ts == int(expected.timestamp() * 1000)
    day, hour = bangkok(ts)
    assert hour == pytest.approx(2.5) and day.weekday == 2 and day.month == 1 and day.workday


@pytest.mark.parametrize("date", [DRY_WEDNESDAY, WET_WEDNESDAY, (2026, 4, 13)])
def test_every_normal_message_validates_with_exact_field_types(
    devices: list[SimDevice], date: tuple[int, int, int]
) -> None:
    sim = Simulation(devices, seed=1, incidents=schedule_incidents(devices, bangkok_ms(*date), DAY_MS))
    start = bangkok_ms(*date)
    seen: Counter[str] = Counter()
    for message in sim.messages(12_000, start, DAY_MS / 12_000):
        assert message.malformed is None
        spec = FEED_SPECS[message.feed]
        payload = message.payload
        assert set(payload) == {"ts", *spec.field_names}, message
        assert isinstance(payload["ts"], int) and payload["ts"] == message.ts_ms
        spec.model.model_validate(payload)
        for name, value in payload.items():
            if name in ("ignition", "door_open"):
                assert type(value) is bool
            elif name in ("occupancy", "ts"):
                assert type(value) is int
            else:
                assert type(value) is float, (name, value)
        assert message.topic == f"city/laem-chabang/{message.feed}/{message.device_id}"
        seen[message.feed] += 1
    assert set(seen) == set(FEED_SPECS)


def test_same_seed_same_messages(devices: list[SimDevice]) -> None:
    def run(seed: int) -> list[bytes]:
        start = bangkok_ms(*DRY_WEDNESDAY)
        incidents = schedule_incidents(devices, start, DAY_MS, seed=seed)
        sim = Simulation(devices, seed=seed, malformed_rate=0.02, incidents=incidents)
        return [m.topic.encode() + m.encode() for m in sim.messages(3000, start, 20_000)]

    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.mark.parametrize("rate", [0.01, 0.02, 0.05, 0.1])
def test_malformed_are_exactly_the_configured_fraction_and_never_valid(devices: list[SimDevice], rate: float) -> None:
    sim = Simulation(devices, seed=2, malformed_rate=rate)
    known = {d.device_id for d in devices}
    messages = list(sim.messages(4000, bangkok_ms(*WET_WEDNESDAY), 1000))
    bad = [m for m in messages if m.malformed]
    assert len(bad) == round(4000 * rate) == sim.malformed
    kinds = Counter(m.malformed for m in bad)
    assert set(kinds) <= {"wrong_type", "out_of_range", "unknown_device"}
    for m in bad:
        if m.malformed == "unknown_device":
            assert m.device_id not in known and m.topic.endswith("/" + m.device_id)
            assert validates(m.feed, m.payload)  # the payload is fine, the device is not registered
        else:
            assert m.device_id in known
            assert not validates(m.feed, m.payload), m
    for m in messages:
        if not m.malformed:
            assert m.device_id in known and validates(m.feed, m.payload)
    if rate >= 0.05:
        assert len(kinds) == 3


def test_no_malformed_by_default(devices: list[SimDevice]) -> None:
    sim = Simulation(devices)
    assert not any(m.malformed for m in sim.messages(2000, bangkok_ms(*DRY_WEDNESDAY), 1000))


def test_timestamps_strictly_increase_per_device(devices: list[SimDevice]) -> None:
    sim = Simulation(devices[:4])
    last: dict[str, int] = {}
    for m in sim.messages(400, bangkok_ms(*DRY_WEDNESDAY), 0.1):  # many messages in the same millisecond
        assert m.ts_ms > last.get(m.device_id, -1)
        last[m.device_id] = m.ts_ms


# ----------------------------------------------------------------------------------------------- daily patterns


def readings(sim: Simulation, devices: list[SimDevice], feed: str, ts: int) -> list[dict[str, Any]]:
    return [sim.reading(d, ts) for d in devices if d.feed == feed]


def mean(rows: list[dict[str, Any]], name: str) -> float:
    return statistics.fmean(float(r[name]) for r in rows)


def test_buses_are_parked_with_ignition_off_at_2am_and_run_school_trips(devices: list[SimDevice]) -> None:
    sim = Simulation(devices)
    night = readings(sim, devices, "bus", bangkok_ms(*DRY_WEDNESDAY, 2.0))
    assert all(r["ignition"] is False and r["speed_kmh"] == 0 and r["occupancy"] == 0 for r in night)
    assert all(r["door_open"] is False for r in night)
    moving_speeds: list[float] = []
    door_opened = occupied = 0
    for minute in range(6 * 60, 8 * 60 + 30):
        for r in readings(sim, devices, "bus", bangkok_ms(*DRY_WEDNESDAY, minute / 60)):
            if float(r["speed_kmh"]) > 0:
                moving_speeds.append(float(r["speed_kmh"]))
                assert r["ignition"] is True and r["door_open"] is False
            door_opened += bool(r["door_open"])
            occupied += int(r["occupancy"]) > 0
    assert moving_speeds and min(moving_speeds) >= 20 and max(moving_speeds) <= 60
    assert door_opened > 0 and occupied > 0
    noon = readings(sim, devices, "bus", bangkok_ms(*DRY_WEDNESDAY, 12.0))
    assert all(r["ignition"] is False and r["occupancy"] == 0 for r in noon)
    afternoon = [
        r
        for minute in range(15 * 60, 17 * 60 + 30, 5)
        for r in readings(sim, devices, "bus", bangkok_ms(*DRY_WEDNESDAY, minute / 60))
    ]
    assert any(float(r["speed_kmh"]) > 0 for r in afternoon)
    saturday = [r for h in range(0, 24) for r in readings(sim, devices, "bus", bangkok_ms(2026, 1, 17, h + 0.25))]
    assert all(r["ignition"] is False for r in saturday)


def test_bus_moves_along_its_route(devices: list[SimDevice]) -> None:
    bus = next(d for d in devices if d.feed == "bus")
    sim = Simulation([bus])
    points = {
        (r["lat"], r["lon"])
        for minute in range(6 * 60, 8 * 60 + 30)
        for r in [sim.reading(bus, bangkok_ms(*DRY_WEDNESDAY, minute / 60))]
    }
    assert len(points) > 10
    lats = [bus.route[0][0], bus.route[-1][0]]
    assert all(min(lats) - 0.03 <= float(lat) <= max(lats) + 0.03 for lat, _ in points)


def test_energy_on_peak_higher_than_at_3am(devices: list[SimDevice]) -> None:
    sim = Simulation(devices)
    peak = readings(sim, devices, "energy", bangkok_ms(*DRY_WEDNESDAY, 11.0))
    night = readings(sim, devices, "energy", bangkok_ms(*DRY_WEDNESDAY, 3.0))
    assert sum(float(r["power_kw"]) for r in peak) > 1.5 * sum(float(r["power_kw"]) for r in night)
    meters = [d for d in devices if d.feed == "energy"]
    for d, p, n in zip(meters, peak, night, strict=True):
        if d.kind in ("office", "industrial"):
            assert float(p["power_kw"]) > float(n["power_kw"]), d
        assert 0.88 <= float(p["power_factor"]) <= 0.98
        assert 220 <= float(p["voltage_v"]) <= 240


def test_energy_register_accumulates_the_power(devices: list[SimDevice]) -> None:
    meter = next(d for d in devices if d.feed == "energy" and d.kind == "industrial")
    sim = Simulation([meter])
    start = bangkok_ms(*DRY_WEDNESDAY, 0.0)
    rows = [sim.reading(meter, start + i * 60_000) for i in range(24 * 60)]
    registers = [float(r["energy_kwh"]) for r in rows]
    assert all(b >= a for a, b in itertools.pairwise(registers))
    mean_power = statistics.fmean(float(r["power_kw"]) for r in rows)
    assert registers[-1] - registers[0] == pytest.approx(mean_power * 24 * (1439 / 1440), rel=0.02)


def test_air_daily_and_seasonal_patterns(devices: list[SimDevice]) -> None:
    sim = Simulation(devices)

    def at(date: tuple[int, int, int], hour: float) -> list[dict[str, Any]]:
        return readings(sim, devices, "air", bangkok_ms(*date, hour))

    morning, afternoon = at(DRY_WEDNESDAY, 7.0), at(DRY_WEDNESDAY, 15.0)
    assert mean(morning, "pm25_ugm3") > 1.4 * mean(afternoon, "pm25_ugm3")
    assert mean(afternoon, "o3_ppb") > 3 * mean(morning, "o3_ppb")
    assert mean(at(DRY_WEDNESDAY, 14.5), "temperature_c") > mean(at(DRY_WEDNESDAY, 6.0), "temperature_c") + 5
    assert mean(at(DRY_WEDNESDAY, 14.5), "humidity_pct") < mean(at(DRY_WEDNESDAY, 6.0), "humidity_pct") - 10
    assert mean(at(DRY_WEDNESDAY, 7.0), "pm25_ugm3") > 2 * mean(at(WET_WEDNESDAY, 7.0), "pm25_ugm3")
    for date in (DRY_WEDNESDAY, WET_WEDNESDAY):
        temps = [float(r["temperature_c"]) for h in range(24) for r in at(date, h)]
        assert min(temps) > 24.5 and max(temps) < 36.5
        # outside haze episodes at most the PCD yellow band: an orange AQI in the demo is an incident, not weather
        assert max(float(r["pm25_ugm3"]) for h in range(24) for r in at(date, h)) <= 37.5


def test_rain_falls_in_wet_season_afternoons_and_raises_canals(devices: list[SimDevice]) -> None:
    sim = Simulation(devices)
    gauges = [d for d in devices if d.feed == "flood"]
    rain_by_hour: dict[int, float] = dict.fromkeys(range(24), 0.0)
    for day in range(1, 29):
        for h in range(24):
            for r in (sim.reading(g, bangkok_ms(2026, 9, day, h)) for g in gauges):
                rain_by_hour[h] += float(r["rain_mm"])
    afternoon = sum(rain_by_hour[h] for h in range(14, 21))
    morning = sum(rain_by_hour[h] for h in range(7, 13))
    assert afternoon > 5 * max(morning, 1.0)
    dry_sim = Simulation(devices)
    dry_rain = sum(
        float(dry_sim.reading(g, bangkok_ms(2026, 2, day, h))["rain_mm"])
        for day in range(1, 29)
        for h in range(24)
        for g in gauges
    )
    assert dry_rain < afternoon / 5
    for g in gauges:  # no normal level reaches the bank
        for h in range(0, 24 * 28, 5):
            level = sim.normal_canal_level(g, bangkok_ms(2026, 9, 1, h))
            assert g.site["ground_level_m"] < level < g.site["bank_level_m"]


# ----------------------------------------------------------------------------------------------- incidents


def incident_of(incidents: list[Incident], kind: str) -> Incident:
    return next(i for i in incidents if i.kind == kind)


@pytest.fixture(scope="module")
def day_run(devices: list[SimDevice]) -> tuple[Simulation, list[Incident]]:
    incidents = schedule_incidents(devices, bangkok_ms(*DRY_WEDNESDAY), DAY_MS, seed=1)
    return Simulation(devices, incidents=incidents), incidents


def test_every_incident_is_scheduled_within_the_run(devices: list[SimDevice]) -> None:
    for span_ms in (60_000, 3_600_000, DAY_MS, 3 * DAY_MS):
        start = bangkok_ms(*DRY_WEDNESDAY)
        incidents = schedule_incidents(devices, start, span_ms)
        per_day = max(1, span_ms // DAY_MS)
        assert Counter(i.kind for i in incidents) == dict.fromkeys(INCIDENT_KINDS, per_day)
        assert all(start <= i.start_ms < i.end_ms <= start + span_ms for i in incidents)
    assert schedule_incidents(devices, 0, DAY_MS) == schedule_incidents(devices, 0, DAY_MS)


def test_haze_episode_in_one_district(devices: list[SimDevice], day_run: tuple[Simulation, list[Incident]]) -> None:
    sim, incidents = day_run
    haze = incident_of(incidents, "haze")
    mid = (haze.start_ms + haze.end_ms) // 2
    inside = [d for d in devices if d.device_id in haze.device_ids]
    assert inside and {d.district for d in inside} == {haze.district}
    assert len(inside) == sum(1 for d in devices if d.feed == "air" and d.district == haze.district)
    for d in inside:
        pm25 = float(sim.reading(d, mid)["pm25_ugm3"])
        assert 75 < pm25 <= 150
    outside = [d for d in devices if d.feed == "air" and d.district != haze.district]
    assert all(float(sim.reading(d, mid)["pm25_ugm3"]) < 75 for d in outside)


def test_canal_rises_over_the_bank_at_a_realistic_rate(
    devices: list[SimDevice], day_run: tuple[Simulation, list[Incident]]
) -> None:
    sim, incidents = day_run
    canal = incident_of(incidents, "canal_rise")
    gauge = next(d for d in devices if d.device_id == canal.device_ids[0])
    levels = [float(sim.reading(gauge, ts)["level_m"]) for ts in range(canal.start_ms, canal.end_ms, 600_000)]
    assert levels[0] < gauge.site["bank_level_m"] < max(levels)
    rises = [b - a for a, b in itertools.pairwise(levels) if b - a > 0.02]
    assert rises and all(0.08 <= r <= 0.22 for r in rises[:-1])  # ~10–20 cm per 10 min while rising
    after = float(sim.reading(gauge, canal.end_ms + 6 * 3_600_000)["level_m"])
    assert after < gauge.site["bank_level_m"]


def test_speeding_bus(devices: list[SimDevice], day_run: tuple[Simulation, list[Incident]]) -> None:
    sim, incidents = day_run
    speeding = incident_of(incidents, "speeding")
    bus = next(d for d in devices if d.device_id == speeding.device_ids[0])
    rows = [sim.reading(bus, ts) for ts in range(speeding.start_ms, speeding.end_ms, 15_000)]
    assert all(70 < float(r["speed_kmh"]) <= 95 and r["ignition"] is True for r in rows)
    assert len({(r["lat"], r["lon"]) for r in rows}) > len(rows) // 2  # it moves
    assert sim.reading(bus, speeding.end_ms + 3_600_000)["speed_kmh"] <= 60


def test_meter_spike(devices: list[SimDevice], day_run: tuple[Simulation, list[Incident]]) -> None:
    sim, incidents = day_run
    spike = incident_of(incidents, "meter_spike")
    meter = next(d for d in devices if d.device_id == spike.device_ids[0])
    r = sim.reading(meter, spike.start_ms + 60_000)
    assert float(r["power_kw"]) == pytest.approx(3 * meter.site["contracted_kw"], rel=0.1)
    assert validates("energy", {"ts": spike.start_ms, **r})


def test_child_left_behind(devices: list[SimDevice], day_run: tuple[Simulation, list[Incident]]) -> None:
    sim, incidents = day_run
    child = incident_of(incidents, "child_left")
    assert child.duration_s > 5 * 60
    bus = next(d for d in devices if d.device_id == child.device_ids[0])
    rows = [sim.reading(bus, ts) for ts in range(child.start_ms, child.end_ms, 30_000)]
    assert all(r["ignition"] is False and int(r["occupancy"]) > 0 and r["speed_kmh"] == 0 for r in rows)
    assert len({(r["lat"], r["lon"]) for r in rows}) == 1
    # Scheduled where it happens: the engine has just been switched off at the end of a school run.
    before = sim.reading(bus, child.start_ms - 30_000)
    assert before["ignition"] is True


def test_incidents_can_be_triggered(devices: list[SimDevice]) -> None:
    sim = Simulation(devices)
    now = bangkok_ms(*WET_WEDNESDAY, 2.0)  # the middle of the night: buses parked
    haze = sim.trigger("haze", now, district="ศรีราชา", duration_s=600)
    sim.trigger("speeding", now, device_id="lcb-bus-003", duration_s=300)
    child = sim.trigger("child_left", now, duration_s=900)
    spike = sim.trigger("meter_spike", now, duration_s=600)
    canal = sim.trigger("canal_rise", now, duration_s=3600)
    at = now + 300_000 - 1
    by_id = {d.device_id: d for d in devices}
    assert haze.district == "ศรีราชา"
    assert all(float(sim.reading(by_id[i], at)["pm25_ugm3"]) > 75 for i in haze.device_ids)
    assert float(sim.reading(by_id["lcb-bus-003"], at - 1000)["speed_kmh"]) > 70
    r = sim.reading(by_id[child.device_ids[0]], at)
    assert r["ignition"] is False and int(r["occupancy"]) > 0
    meter = by_id[spike.device_ids[0]]
    assert float(sim.reading(meter, at)["power_kw"]) > 2.5 * meter.site["contracted_kw"]
    gauge = by_id[canal.device_ids[0]]
    assert float(sim.reading(gauge, now + 3_000_000)["level_m"]) > gauge.site["bank_level_m"]
    with pytest.raises(ValueError):
        sim.trigger("earthquake", now)
    with pytest.raises(ValueError):
        sim.trigger("speeding", now, device_id="lcb-air-001")


def test_malformed_messages_do_not_always_hit_the_same_devices(devices: list[SimDevice]) -> None:
    # 200 devices, 1 % malformed: messages 100 and 200 of each round were always the same two devices, which then
    # never sent one valid reading (and were reported silent by the demo)
    sim = Simulation(devices, seed=1, malformed_rate=0.01)
    rounds = [list(sim.messages(len(devices), bangkok_ms(*DRY_WEDNESDAY, 8.0) + r * 120_000, 1)) for r in range(3)]
    for r in range(2):
        valid = {m.device_id for m in rounds[r] + rounds[r + 1] if not m.malformed}
        assert valid >= {d.device_id for d in devices}  # every device sends a good reading every two rounds
    assert len({m.device_id for rnd in rounds for m in rnd if m.malformed}) > 2
