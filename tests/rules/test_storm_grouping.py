"""Issue 11 item 4: with the shipped rules and routing, a haze onset — 1,000 stations crossing Thai AQI 100
within a minute — gives one grouped message per (rule, city), naming the worst stations and counting all."""

from __future__ import annotations

from pathlib import Path

from core.time import NS
from rules.notify.memory import MemoryNotifier
from rules.settings import RulesSettings, build_rules_service
from rules.timeutil import FakeClock
from tests.rules.conftest import T0, device, reading

CITIES = ("chiangmai", "lampang", "lamphun")


async def test_a_thousand_stations_crossing_aqi_100_in_a_minute_give_one_message_per_rule_and_city(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0)
    memory = MemoryNotifier("default")
    service = build_rules_service(
        RulesSettings(database_url=f"sqlite:///{tmp_path / 'alerts.db'}"),  # shipped rules and routing
        None,
        clock=clock,
        notifiers={"default": memory},
    )
    await service.start()
    stations = [device(f"air-{i:04d}", "air", city=CITIES[i % 3]) for i in range(1000)]
    # every station crosses within one minute; station i reads AQI 101 + i % 150 (the worst: 250)
    for i, station in enumerate(stations):
        t = T0 + int(i * 60 / 1000 * NS)
        clock.set(t)
        await service.engine.process(reading(station, t, aqi_th=101 + i % 150, pm25_ugm3=50.0), station)
    # `for: 1h`: they fire an hour after crossing, again within a minute; the engine ticks every 5 s
    for step in range(0, 4 * 60, 5):
        clock.set(T0 + 3600 * NS + step * NS)
        await service.engine.tick()
    await service.pipeline.drain(60)

    firing = [m for m in memory.sent if m.kind == "firing"]
    assert len(memory.sent) == len(firing) == 3  # one per (rule, city), not 1,000
    by_city = {m.payload["groupLabels"]["city"]: m for m in firing}
    assert set(by_city) == set(CITIES)
    assert sum(len(m.alert_ids) for m in firing) == 1000
    for city, message in by_city.items():
        count = sum(1 for s in stations if s.city == city)
        assert len(message.alert_ids) == count and f"{count} alerts" in message.title
        assert message.payload["groupLabels"] == {"rule": "air_aqi_th_unhealthy", "city": city}
        assert f"…and {count - 10} more (showing the 10 worst)" in message.body
        assert f"และอีก {count - 10} รายการ" in message.body
        assert message.body.split("———")[1].count("\n• ") == 10  # the worst ten are listed, in English
        in_city = [(101 + i % 150, s.name) for i, s in enumerate(stations) if s.city == city]
        worst, name = max(in_city, key=lambda p: p[0])
        first_listed = message.body.split("———")[1].split("\n• ")[1]
        assert first_listed.startswith(f"Air quality at {name}: Thai AQI {worst},")  # worst first
    await service.stop()
