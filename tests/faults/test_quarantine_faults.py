"""The quarantine under a flood stays bounded (rows, bytes, age: oldest dropped first, counted), and
`replay` resubmits what was quarantined once the cause is fixed — against a real InfluxDB."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import orjson

from collectors.directory import StaticDirectory
from collectors.quarantine import QuarantineStore
from collectors.sinks.influx import InfluxV1Sink
from core.model import DeviceInfo
from nakhon.collector_wiring import build_collector
from nakhon.config import load_settings
from nakhon.replay import replay
from tests.servers import InfluxServer

T0_MS = 1_795_000_000_000
CITY = "laem-chabang"
AIR = DeviceInfo("air-q-1", "air", CITY, "บ่อวิน")
LATE = DeviceInfo("air-q-late", "air", CITY, "บ่อวิน")


async def flood(store: QuarantineStore, n: int, *, size: int = 100, received_ns: int | None = None) -> None:
    await asyncio.gather(*[
        store.add(topic=f"city/x/air/junk-{i}", payload=b"j" * size, reason="bad_json", detail="junk",
                  received_ns=received_ns)
        for i in range(n)
    ])


async def test_a_flood_of_junk_keeps_the_quarantine_within_its_row_limit_dropping_the_oldest(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q.db", max_rows=1000)
    await flood(store, 2500)
    rows, _ = store.size
    assert 900 <= rows <= 1000
    assert store.dropped() == 2500 - rows
    kept = store.list(limit=5000)
    assert min(r.id or 0 for r in kept) == 2500 - rows + 1  # the newest were kept
    await store.close()
    reopened = QuarantineStore(tmp_path / "q.db", max_rows=1000)
    assert reopened.size[0] == rows and reopened.dropped() == 2500 - rows  # counted in the file, not in memory
    await reopened.close()


async def test_large_junk_keeps_the_quarantine_within_its_byte_limit(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q.db", max_bytes=200_000)
    await flood(store, 600, size=4000)  # 2.4 MB offered
    _, kept_bytes = store.size
    assert kept_bytes <= 200_000
    assert store.dropped() > 0
    await store.close()


async def test_old_quarantine_rows_are_dropped_by_age(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q.db", max_age_s=3600)
    await flood(store, 10, received_ns=time.time_ns() - 2 * 3600 * 10**9)  # two hours old
    await flood(store, 10)  # a new collector start checks the age at its first insert
    await store.close()
    store = QuarantineStore(tmp_path / "q.db", max_age_s=3600)
    await flood(store, 1)
    assert store.size[0] == 11 and store.dropped() == 10
    await store.close()


async def test_replay_resubmits_refused_points_and_unknown_devices_once_fixed(tmp_path: Path) -> None:
    with InfluxServer(tmp_path) as influx:
        settings = load_settings(None, data_dir=tmp_path / "data", influxdb={"url": influx.url},
                                 mqtt={"client_id": "replay-test"})
        httpx.post(f"{influx.url}/write", params={"db": "nakhon"},
                   content=f'air_quality,device_id=seed pm25_ugm3="text" {T0_MS * 1_000_000}'.encode())
        collector = build_collector(settings, StaticDirectory([AIR]))
        await collector.writer.start()
        topic = f"city/{CITY}/air/{AIR.device_id}"
        conflicting = [orjson.dumps({"pm25_ugm3": 10.0 + i, "ts": T0_MS + 1 + i}) for i in range(50)]
        unknown = [orjson.dumps({"pm25_ugm3": 5.0, "ts": T0_MS + 100 + i}) for i in range(10)]
        outcomes = [collector.pipeline.submit(topic, p, time.time_ns()) for p in conflicting]
        outcomes += [collector.pipeline.submit(f"city/{CITY}/air/{LATE.device_id}", p, time.time_ns())
                     for p in unknown]
        collector.writer.flush()
        await asyncio.gather(*outcomes)
        await collector.writer.close()
        await collector.quarantine.close()

        store = QuarantineStore(collector.data_dir / "quarantine.db")
        reasons = {r: n for _, r, n in store.counts()}
        assert reasons == {"sink_rejected": 50, "unknown_device": 10}

        # Replaying before the cause is fixed changes nothing: still refused, still unknown.
        directory = StaticDirectory([AIR])
        first = await replay(settings, store, directory, InfluxV1Sink(influx.url, "nakhon"))
        assert first.still_refused == 50 and first.requarantined == 10
        assert {r: n for _, r, n in store.counts()} == reasons

        # The operator fixes both: the string field is dropped, the late device registered.
        influx.query("DROP SERIES FROM air_quality WHERE device_id = 'seed'")
        influx.query("DROP MEASUREMENT air_quality")
        directory.put(LATE)
        only_sink = await replay(settings, store, directory, InfluxV1Sink(influx.url, "nakhon"),
                                 reason="sink_rejected")
        assert only_sink.rewritten == 50 and only_sink.resubmitted == 0
        assert {r: n for _, r, n in store.counts()} == {"unknown_device": 10}
        rest = await replay(settings, store, directory, InfluxV1Sink(influx.url, "nakhon"))
        assert rest.resubmitted == 10 and rest.requarantined == 0
        assert list(store.counts()) == []
        await store.close()
        rows = influx.rows("SELECT pm25_ugm3, device_id FROM air_quality", epoch="ns")
        assert sorted(r["time"] for r in rows) == sorted(
            [(T0_MS + 1 + i) * 1_000_000 for i in range(50)] + [(T0_MS + 100 + i) * 1_000_000 for i in range(10)]
        )
