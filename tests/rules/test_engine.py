from __future__ import annotations

import asyncio
from typing import Any

from core.model import DeviceInfo, Reading
from core.time import NS
from rules.check import load_rules_dir
from rules.engine import RulesEngine, offer
from rules.metrics import RULES_QUEUE_DROPPED
from rules.model import Rule, RuleSet
from tests.rules.conftest import T0, PointSink, device, minutes, reading


def engine_for(
    names: list[str], store: Any, sink: PointSink, clock: Any, pipeline: Any = None, **kw: Any
) -> RulesEngine:
    return RulesEngine(load_rules_dir().subset(names), store, pipeline, sink, clock=clock, **kw)


async def test_alert_point_has_the_contracted_shape(store, clock, sink) -> None:
    eng = engine_for(["flood_level_overbank"], store, sink, clock)
    dev = device("gauge-1", "flood", name="สะพานนวรัฐ")
    await eng.process(reading(dev, T0, level_pct_bank=104.0), dev)
    p = sink.points[0]
    assert p.measurement == "alerts" and p.time_ns == T0
    assert p.tags == {
        "rule": "flood_level_overbank",
        "device_id": "gauge-1",
        "city": "chiangmai",
        "district": "mueang",
        "feed": "flood",
        "severity": "critical",
    }
    assert p.fields["state"] == "pending" and p.fields["value"] == 104.0
    assert isinstance(p.fields["alert_id"], str) and "สะพานนวรัฐ" in str(p.fields["message_th"])
    assert "Overbank" in str(p.fields["message_en"])


async def test_flood_warning_and_critical_levels(store, clock, sink) -> None:
    eng = engine_for(["flood_level_high", "flood_level_overbank"], store, sink, clock)
    dev = device("gauge-1", "flood")
    await eng.process(reading(dev, T0, level_pct_bank=69.9), dev)
    assert sink.points == []
    await eng.process(reading(dev, T0 + minutes(1), level_pct_bank=70.0), dev)
    await eng.process(reading(dev, T0 + minutes(6), level_pct_bank=100.0), dev)  # exactly 100: not overbank
    assert sink.states == [("flood_level_high", "gauge-1", "pending"), ("flood_level_high", "gauge-1", "firing")]
    await eng.process(reading(dev, T0 + minutes(7), level_pct_bank=100.5), dev)
    await eng.tick(T0 + minutes(9))
    assert sink.states[-2:] == [
        ("flood_level_overbank", "gauge-1", "pending"),
        ("flood_level_overbank", "gauge-1", "firing"),
    ]
    alert = store.get_open("flood_level_overbank", "gauge-1")
    assert alert is not None and alert.severity == "critical" and alert.state == "firing"


async def test_flood_rising_fast_uses_the_30_minute_rate_not_single_steps(store, clock, sink) -> None:
    eng = engine_for(["flood_rising_fast"], store, sink, clock)
    steady, step = device("g-b", "flood"), device("g-a", "flood")
    for i, level in enumerate([2.0, 2.1, 2.25, 2.4, 2.6]):  # rising 0.15 m per 5 min, sustained
        await eng.process(reading(steady, T0 + minutes(5 * i), level_m=level), steady)
    # one 15 cm jump between two readings a minute apart, then flat: a ripple, not a rising canal
    await eng.process(reading(step, T0, level_m=2.0, rise_cm_per_10min=150.0), step)
    for i in range(1, 7):
        await eng.process(reading(step, T0 + minutes(5 * i - 4), level_m=2.15), step)
    await eng.tick(T0 + minutes(26))  # g-b pending since minute 15 (half the window), for 10m
    assert {(r, d) for r, d, s in sink.states if s == "firing"} == {("flood_rising_fast", "g-b")}
    assert not [s for s in sink.states if s[1] == "g-a"]


async def test_bus_speed_and_child_left(store, clock, sink) -> None:
    eng = engine_for(["bus_over_speed", "bus_child_left"], store, sink, clock)
    bus = device("van-7", "bus", site={"speed_limit_kmh": 60})
    await eng.process(reading(bus, T0, speed_kmh=75.0, ignition=True, occupancy=12), bus)
    await eng.process(reading(bus, T0 + 31 * NS, speed_kmh=72.0, ignition=True, occupancy=12), bus)
    assert ("bus_over_speed", "van-7", "firing") in sink.states
    # derived over_speed_kmh from collectors/domain also fires (e.g. a 40 km/h school zone)
    van = device("van-8", "bus")
    await eng.process(reading(van, T0, speed_kmh=45.0, speed_limit_kmh=40.0, over_speed_kmh=5.0), van)
    assert ("bus_over_speed", "van-8", "pending") in sink.states
    # parked, engine off, 2 children still counted
    t = T0 + minutes(10)
    for i in range(6):
        await eng.process(reading(bus, t + minutes(i), speed_kmh=0.0, ignition=False, occupancy=2), bus)
    child = [s for s in sink.states if s[0] == "bus_child_left"]
    assert child == [("bus_child_left", "van-7", "pending"), ("bus_child_left", "van-7", "firing")]
    alert = store.get_open("bus_child_left", "van-7")
    assert alert is not None and alert.severity == "critical"
    assert "2" in alert.message_th and "เด็ก" in alert.message_th
    await eng.process(reading(bus, t + minutes(7), ignition=False, occupancy=0), bus)
    assert sink.states[-1] == ("bus_child_left", "van-7", "resolved")


async def test_child_left_fires_on_tick_without_new_readings(store, clock, sink) -> None:
    eng = engine_for(["bus_child_left"], store, sink, clock)
    bus = device("van-1", "bus")
    await eng.process(reading(bus, T0, ignition=False, occupancy=1), bus)
    await eng.tick(T0 + minutes(4))
    assert sink.states[-1][2] == "pending"
    await eng.tick(T0 + minutes(5))
    assert sink.states[-1][2] == "firing"


async def test_energy_demand_uses_contracted_kw_during_on_peak(store, clock, sink) -> None:
    eng = engine_for(["energy_demand_over_contract", "energy_power_factor_low"], store, sink, clock)
    meter = device("mtr-1", "energy", site={"contracted_kw": 500})
    await eng.process(reading(meter, T0, {"tou": "off_peak"}, demand_15min_kw=650.0), meter)
    assert sink.points == []
    await eng.process(reading(meter, T0 + minutes(1), {"tou": "on_peak"}, demand_15min_kw=480.0), meter)
    assert sink.points == []
    await eng.process(reading(meter, T0 + minutes(2), {"tou": "on_peak"}, demand_15min_kw=520.0), meter)
    assert sink.states == [("energy_demand_over_contract", "mtr-1", "firing")]
    assert store.get_open("energy_demand_over_contract", "mtr-1").threshold == 500  # type: ignore[union-attr]
    # device threshold override beats the site value
    meter2 = device("mtr-2", "energy", site={"contracted_kw": 500}, thresholds={"contracted_kw": 600})
    await eng.process(reading(meter2, T0, {"tou": "on_peak"}, demand_15min_kw=520.0), meter2)
    assert len(sink.points) == 1
    # power factor: below 0.85 for 15 min, clears at >= 0.87 only (hysteresis)
    for i, pf in enumerate([0.80, 0.82, 0.84, 0.86, 0.86]):
        await eng.process(reading(meter, T0 + minutes(8 * i), power_factor=pf), meter)
    pf_states = [s for r, _, s in sink.states if r == "energy_power_factor_low"]
    assert pf_states == ["pending", "firing"]
    await eng.process(reading(meter, T0 + minutes(45), power_factor=0.9), meter)
    assert [s for r, _, s in sink.states if r == "energy_power_factor_low"][-1] == "resolved"


async def test_pending_that_clears_never_fires(store, clock, sink) -> None:
    eng = engine_for(["bus_child_left"], store, sink, clock)
    bus = device("van-1", "bus")
    await eng.process(reading(bus, T0, ignition=False, occupancy=1), bus)
    await eng.process(reading(bus, T0 + minutes(2), ignition=False, occupancy=0), bus)
    assert [s for _, _, s in sink.states] == ["pending", "resolved"]
    assert store.list_alerts(state="resolved")[0].fired_ns is None


async def test_keep_firing_for_damps_flapping(store, clock, sink) -> None:
    rule = Rule.model_validate(
        {
            "name": "hot",
            "feed": "air",
            "severity": "info",
            "summary_th": "ร้อน",
            "summary_en": "hot",
            "when": {"compare": {"field": "temperature_c", "op": ">", "value": 40}},
            "keep_firing_for": "10m",
        }
    )
    eng = RulesEngine(RuleSet(rules=[rule]), store, None, sink, clock=clock)
    dev = device()
    values = [41, 39, 41, 39, 41, 39]  # flaps every minute
    for i, v in enumerate(values):
        await eng.process(reading(dev, T0 + minutes(i), temperature_c=v), dev)
    assert [s for _, _, s in sink.states] == ["firing"]  # one alert, no resolve/fire storm
    alert = store.get_open("hot", "dev-1")
    assert alert is not None and alert.flap_count == 2
    await eng.tick(T0 + minutes(5 + 10))
    assert [s for _, _, s in sink.states] == ["firing", "resolved"]


async def test_heartbeat_absence_with_device_override(store, clock, sink) -> None:
    eng_devices = [
        device("g-1", "flood"),  # default 30m
        device("g-2", "flood", heartbeat_s=3600),  # registry heartbeat (profile default / device override)
        device("g-3", "flood", status="retired"),
    ]
    eng = engine_for(["flood_device_silent"], store, sink, clock, devices=lambda: eng_devices)
    await eng.start()
    for d in eng_devices:
        await eng.process(reading(d, T0, level_m=1.0), d)
    await eng.tick(T0 + minutes(30))
    assert sink.points == []
    await eng.tick(T0 + minutes(31))
    assert sink.states == [("flood_device_silent", "g-1", "firing")]
    assert "for 31 min (expected every 30 min)" in str(sink.points[0].fields["message_en"])
    assert "มา 31 นาที (ปกติส่งทุก 30 นาที)" in str(sink.points[0].fields["message_th"])
    await eng.tick(T0 + minutes(61))
    assert sink.states[-1] == ("flood_device_silent", "g-2", "firing")
    await eng.process(reading(eng_devices[0], T0 + minutes(62), level_m=1.1), eng_devices[0])
    assert sink.states[-1] == ("flood_device_silent", "g-1", "resolved")
    assert not any(d == "g-3" for _, d, _ in sink.states)


async def test_run_consumes_bounded_queue(store, clock, sink) -> None:
    eng = engine_for(["flood_level_overbank"], store, sink, clock)
    queue: asyncio.Queue[tuple[Reading, DeviceInfo]] = asyncio.Queue(maxsize=2)
    dev = device("g-1", "flood")
    assert offer(queue, reading(dev, T0, level_pct_bank=120.0), dev)
    assert offer(queue, reading(dev, T0 + minutes(3), level_pct_bank=121.0), dev)
    dropped = RULES_QUEUE_DROPPED._value.get()
    assert not offer(queue, reading(dev, T0 + minutes(4), level_pct_bank=122.0), dev)  # full: dropped, counted
    assert RULES_QUEUE_DROPPED._value.get() == dropped + 1
    task = asyncio.create_task(eng.run(queue, tick_interval_s=0.05))
    await asyncio.wait_for(queue.join(), 5)
    task.cancel()
    assert sink.states == [("flood_level_overbank", "g-1", "pending"), ("flood_level_overbank", "g-1", "firing")]


async def test_sink_failure_does_not_stop_alerting(store, clock) -> None:
    async def broken(_p: Any) -> None:
        raise ConnectionError("influx down")

    eng = RulesEngine(load_rules_dir().subset(["flood_level_overbank"]), store, None, broken, clock=clock)
    dev = device("g-1", "flood")
    await eng.process(reading(dev, T0, level_pct_bank=120.0), dev)
    assert store.get_open("flood_level_overbank", "g-1") is not None


async def test_rule_match_limits_devices(store, clock, sink) -> None:
    rule = Rule.model_validate(
        {
            "name": "cm_only",
            "feed": "air",
            "summary_th": "x",
            "summary_en": "x",
            "match": {"cities": ["chiangmai"]},
            "when": {"compare": {"field": "aqi_th", "op": ">", "value": 0}},
        }
    )
    eng = RulesEngine([rule], store, None, sink, clock=clock)
    a, b = device("a"), device("b", city="bangkok")
    await eng.process(reading(a, T0, aqi_th=5), a)
    await eng.process(reading(b, T0, aqi_th=5), b)
    assert [d for _, d, _ in sink.states] == ["a"]


async def test_child_left_firing_on_a_tick_keeps_the_child_count(store, clock, sink) -> None:
    # readings every 3 minutes, `for: 5m` runs out on a tick between them: the count was lost ("ยังนับได้  คน")
    eng = engine_for(["bus_child_left"], store, sink, clock)
    bus = device("van-3", "bus", name="รถตู้ 12-3456")
    for m in (0, 3):
        await eng.process(reading(bus, T0 + minutes(m), ignition=False, occupancy=2), bus)
    await eng.tick(T0 + minutes(5.5))  # no reading at this moment
    assert sink.states[-1] == ("bus_child_left", "van-3", "firing")
    th, en = str(sink.points[-1].fields["message_th"]), str(sink.points[-1].fields["message_en"])
    assert "ยังนับได้ 2 คน" in th and "2 children still on board" in en, (th, en)
    assert "ดับเครื่องตั้งแต่ 6 ม.ค. 2569 10:00 น." in th  # the reading that opened the alert
    stored = store.get_open("bus_child_left", "van-3")
    assert stored is not None and "ยังนับได้ 2 คน" in stored.message_th  # reminders and the ack page use it


async def test_device_registered_while_running_is_silent_from_registration(store, clock, sink) -> None:
    # a device registered while the engine runs was reported silent ~10 s later (silence counted from start)
    listed: list[DeviceInfo] = [device("g-old", "flood", heartbeat_s=30)]
    eng = engine_for(["flood_device_silent"], store, sink, clock, devices=lambda: list(listed))
    await eng.start()
    await eng.process(reading(listed[0], T0, level_m=1.0), listed[0])
    await eng.tick(T0 + 20 * NS)
    listed.append(device("g-new", "flood", heartbeat_s=30))  # registered now, 21 s after the engine started
    await eng.tick(T0 + 21 * NS)
    await eng.tick(T0 + 41 * NS)  # 41 s after start, 20 s after registration
    assert [s for s in sink.states if s[1] == "g-new"] == []
    await eng.tick(T0 + 52 * NS)  # 31 s after registration
    assert ("flood_device_silent", "g-new", "firing") in sink.states
    new = next(p for p in sink.points if p.tags["device_id"] == "g-new")
    assert "31 s" in str(new.fields["message_en"]) and "31 วินาที" in str(new.fields["message_th"])


async def test_pending_child_left_firing_after_a_restart_keeps_the_count(store, clock, sink) -> None:
    bus = device("van-9", "bus", name="รถตู้ 99-9999")
    first = engine_for(["bus_child_left"], store, sink, clock)
    await first.process(reading(bus, T0, ignition=False, occupancy=3), bus)
    again = engine_for(["bus_child_left"], store, sink, clock, devices=lambda: [bus])  # a restart: no reading yet
    await again.start()
    await again.tick(T0 + minutes(6))
    assert sink.states[-1] == ("bus_child_left", "van-9", "firing")
    assert "ยังนับได้ 3 คน" in str(sink.points[-1].fields["message_th"])
