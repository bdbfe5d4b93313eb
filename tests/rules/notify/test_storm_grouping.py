"""Issue 11 item 4: with the shipped rules and routing, a haze onset — 1,000 stations crossing Thai AQI 100
within a minute — gives one grouped message per (rule, city), naming the worst stations and counting all."""

from __future__ import annotations

from pathlib import Path

from core.time import NS
from rules.notify.memory import MemoryNotifier
from rules.service import build_rules_service
from rules.settings import RulesSettings
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


def test_inhibition_in_a_storm_reads_only_the_alerts_that_can_inhibit() -> None:
    """Whether one gauge's warning is inhibited looks at the firing alerts of that gauge, not at every firing
    alert's labels (quadratic in a storm); the inhibition itself still holds, and only where it should."""
    from rules.notify.pipeline import alert_labels
    from rules.notify.routing import Router, parse_routing
    from rules.notify.suppress import Suppressor
    from rules.store import Alert
    from tests.rules.conftest import T0

    routing = parse_routing("""
receivers:
  - {name: ops}
route:
  receiver: ops
inhibit_rules:
  - source_match: {severity: critical, rule_group: flood_level}
    target_match: {severity: warning, rule_group: flood_level}
    equal: [device_id]
""")

    def alert(rule: str, device_id: str, severity: str) -> Alert:
        return Alert.opened(rule=rule, device_id=device_id, city="c", district="d", feed="flood", severity=severity,
                            t_ns=T0, firing=True, labels={"rule_group": "flood_level"})

    overbank = [alert("flood_level_overbank", f"gauge-{i}", "critical") for i in range(1000)]
    read: list[str] = []

    def labels_of(a: Alert) -> dict[str, str]:
        read.append(a.id)
        return alert_labels(a)

    suppressor = Suppressor(Router(routing), labels_of, lambda _d: None, lambda: overbank)
    high_7 = alert("flood_level_high", "gauge-7", "warning")
    assert suppressor.held_by(high_7, T0) == "inhibited"
    assert len(read) <= 2  # the target and gauge-7's overbank, not the 1,000
    read.clear()
    assert suppressor.held_by(alert("flood_level_high", "gauge-other", "warning"), T0) is None
    assert suppressor.held_by(overbank[3], T0) is None  # a critical alert is no inhibit target
    assert len(read) <= 2
