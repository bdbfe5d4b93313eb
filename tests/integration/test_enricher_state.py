"""Derived values keep their per-device state across a collector restart (rolling AQI means, registers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from collectors.directory import StaticDirectory
from collectors.sinks.sqlite import SQLiteSink
from core.model import DeviceInfo
from nakhon.collector_wiring import build_collector
from nakhon.config import load_settings
from tests.publishing import AckingPublisher
from tests.servers import MosquittoServer

T0_MS = 1_795_000_000_000
DEVICE = DeviceInfo("air-state-1", "air", "laem-chabang", "บ่อวิน")


async def run_collector_for(settings, sink_path: Path, port: int, messages: list[tuple[str, bytes]]) -> None:
    sink = SQLiteSink(sink_path)
    collector = build_collector(settings, StaticDirectory([DEVICE]), sink=sink)
    await collector.start()
    publisher = AckingPublisher(port, client_id="state-publisher")
    publisher.publish_many(messages)
    assert await asyncio.to_thread(publisher.wait_all_acked, 20)
    publisher.close()
    await collector.close()  # the orderly stop saves the enrichers' state


async def test_rolling_pm25_mean_survives_a_restart(tmp_path: Path) -> None:
    with MosquittoServer(tmp_path) as broker:
        settings = load_settings(None, data_dir=tmp_path / "data", mqtt={"url": broker.url, "client_id": "state-c"})
        topic = f"city/laem-chabang/air/{DEVICE.device_id}"
        first = [(topic, orjson.dumps({"pm25_ugm3": 100.0, "ts": T0_MS + i * 60_000})) for i in range(60)]
        await run_collector_for(settings, tmp_path / "ts.db", broker.port, first)
        after_restart = [(topic, orjson.dumps({"pm25_ugm3": 0.0, "ts": T0_MS + 61 * 60_000}))]
        await run_collector_for(settings, tmp_path / "ts.db", broker.port, after_restart)

    [last] = SQLiteSink(tmp_path / "ts.db").latest("air_quality", DEVICE.device_id)
    assert last.fields["pm25_ugm3"] == 0.0
    # 60 minutes at 100 µg/m³ then one at 0: the 24-hour mean still remembers the first hour
    assert last.fields["pm25_24h_ugm3"] > 90.0
    assert last.fields["aqi_th"] > 100
