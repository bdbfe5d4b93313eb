"""The rules component's one owner (`rules.service`): built in constructor order, the engine fed from the queue in
a task the service owns, stopped after what is queued is evaluated."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rules.service import ReadingQueue, build_rules_service
from rules.settings import RulesSettings
from rules.store import AlertStore
from tests.rules.conftest import T0, PointSink, device, reading


def _settings(tmp_path: Path, **kw: object) -> RulesSettings:
    return RulesSettings.model_validate({"database_url": f"sqlite:///{tmp_path / 'a.db'}", **kw})


async def test_notifications_look_devices_up_where_they_are_told_at_construction(tmp_path: Path, clock) -> None:
    van = device("van-1", "bus", name="School van 1")
    current = device("van-1", "bus", name="School van 1 (renamed)")
    registry = {"van-1": current}
    given = build_rules_service(_settings(tmp_path), PointSink(), clock=clock, device_lookup=registry.get)
    assert given.pipeline.device_lookup == registry.get  # not replaced by the engine
    evaluated = build_rules_service(_settings(tmp_path), PointSink(), clock=clock)
    try:
        assert evaluated.pipeline.device_lookup is not None and evaluated.pipeline.device_lookup("van-1") is None
        await evaluated.engine.process(reading(van, T0, ignition=False, occupancy=1), van)
        # without a lookup, notifications and messages see the devices as the engine last evaluated them
        assert evaluated.pipeline.device_lookup("van-1") is van
        assert evaluated.engine.renderer.device_lookup is not None
        assert evaluated.engine.renderer.device_lookup("van-1") is van
    finally:
        given.store.close()
        await evaluated.stop()


async def test_the_queue_made_first_is_the_one_the_engine_reads(tmp_path: Path, clock) -> None:
    readings = ReadingQueue(maxsize=1)
    service = build_rules_service(_settings(tmp_path, queue_size=99), PointSink(), clock=clock, queue=readings)
    assert service.queue is readings and readings.maxsize == 1
    van = device("van-1", "bus")
    assert readings.offer_nowait(reading(van, T0, ignition=False, occupancy=1), van)
    assert not readings.offer_nowait(reading(van, T0 + 1, ignition=False, occupancy=1), van)  # full: not queued
    assert readings.qsize() == 1
    service.store.close()


async def test_stop_evaluates_what_is_queued_then_stops_the_loop(tmp_path: Path, clock) -> None:
    sink = PointSink()
    service = build_rules_service(_settings(tmp_path), sink, clock=clock)
    await service.start()
    vans = [device(f"van-{i}", "bus") for i in range(20)]
    for van in vans:
        await service.queue.offer(reading(van, T0, ignition=False, occupancy=1), van)
    service.start_consuming()
    await service.stop()
    assert service.queue.empty()
    # each reading's evaluation is committed: a child on board with the ignition off is a `bus_child_left`
    # candidate (pending, not shown before `show_pending_after_s`)
    stored = AlertStore(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        assert {c.key for c in stored.candidates()} == {("bus_child_left", v.device_id) for v in vans}
    finally:
        stored.close()
    loops = [t for t in asyncio.all_tasks() if t.get_name() == "rules-engine" and not t.done()]
    assert loops == []
    await service.stop()  # once: a second stop does nothing (and does not fail on the closed store)
