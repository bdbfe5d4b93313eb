from __future__ import annotations

from pathlib import Path

from rules.engine import offer
from rules.notify.memory import MemoryNotifier
from rules.notify.render import Renderer
from rules.service import build_rules_service
from rules.settings import RulesSettings
from rules.store import Alert
from tests.rules.conftest import T0, PointSink, device, minutes, reading


async def test_build_rules_service_wires_everything(tmp_path: Path, clock) -> None:
    sink = PointSink()
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "receivers: [{name: ops}]\nroute: {receiver: ops, group_wait: 0s, repeat_interval: 0s}\n", encoding="utf-8"
    )
    gauge = device("g-1", "flood", maintenance_until_ns=T0 + minutes(60))
    mem = MemoryNotifier("ops")
    service = build_rules_service(
        RulesSettings(database_url=f"sqlite:///{tmp_path / 'a.db'}", routing_file=routing),
        sink,
        devices=lambda: [gauge],
        clock=clock,
        notifiers={"ops": mem},
    )
    await service.start()
    assert {r.name for r in service.ruleset.rules} >= {"flood_level_overbank", "bus_child_left"}
    assert offer(service.queue, reading(gauge, T0, level_pct_bank=130.0), gauge)
    reading_, dev = service.queue.get_nowait()
    await service.engine.process(reading_, dev)
    clock.set(T0 + minutes(3))
    await service.engine.tick()
    await service.pipeline.drain()
    # the device is in maintenance: the alert fires and is recorded, but nobody is notified
    assert ("flood_level_overbank", "g-1", "firing") in sink.states
    assert mem.sent == []
    clock.set(T0 + minutes(61))
    await service.engine.tick()
    await service.pipeline.drain()
    notified = {(a["rule"], a["device_id"]) for m in mem.sent for a in m.payload["alerts"]}
    assert {("flood_level_overbank", "g-1"), ("flood_level_high", "g-1"), ("flood_device_silent", "g-1")} == notified
    assert service.router(lambda *roles: lambda: "x").routes
    await service.stop()


async def test_messages_in_nakhon_run_name_the_city_from_the_registry(tmp_path: Path) -> None:
    """`nakhon run` renders the registry's city names (the slug `laem-chabang` was shown before)."""
    from gateway.registry.store import RegistryStore
    from nakhon.rules_wiring import CityNamesCache

    registry = RegistryStore.for_data_dir(tmp_path / "data")
    registry.migrate()
    registry.cities.set("laem-chabang", "แหลมฉบัง", "Laem Chabang", actor="test")
    names = CityNamesCache(registry.cities.all)
    renderer = Renderer(city_names=names)
    alert = Alert(
        "a1", "flood_level_high", "g-1", "laem-chabang", "บางละมุง", "flood", "warning", "firing", 80.0, 70.0,
        "ระดับน้ำสูง", "High water", {}, T0, T0, None, T0,
    )  # fmt: skip
    _title, body = renderer.render([alert], "firing", "ops", "both", T0)
    assert "บางละมุง · แหลมฉบัง" in body and "บางละมุง · Laem Chabang" in body and "laem-chabang" not in body
    assert names("chiangmai") is None  # an unnamed city shows its slug
    registry.close()
