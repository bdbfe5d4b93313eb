"""The ingest pipeline with in-process seams: every message ends stored or quarantined, durably."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from collectors.directory import StaticDirectory
from collectors.domain import default_enrichers
from collectors.formats import make_format
from collectors.mapping import FieldMapper
from collectors.mapping.profiles import builtin_profiles
from collectors.pipeline import Input, Pipeline, topic_matches
from collectors.quarantine import QuarantineStore
from collectors.sinks.memory import MemorySink
from collectors.sinks.writer import BatchWriter
from core.model import DeviceInfo, Reading
from rules.service import ReadingQueue

DEVICES = [
    DeviceInfo("air-001", "air", "laem-chabang", "ทุ่งสุขลา", name="โรงเรียน A"),
    DeviceInfo("flood-001", "flood", "laem-chabang", "บ่อวิน", site={"bank_level_m": 3.0, "ground_level_m": 0.0}),
    DeviceInfo("bus-001", "bus", "laem-chabang", "ศรีราชา"),
    DeviceInfo("energy-001", "energy", "laem-chabang", "บ่อวิน", status="retired"),
    DeviceInfo("lora-air-7", "air", "laem-chabang", "บ่อวิน", dev_eui="70b3d57ed005ab12", profile="air-generic-lora"),
]
TS_MS = 1_795_741_200_000  # 2026-11-27T01:00:00Z
RECEIVED_NS = 1_795_741_300_000_000_000  # 100 s later: readings from the future are bad_time


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.sink = MemorySink()
        self.writer = BatchWriter(self.sink, None, flush_interval_s=0.01)
        self.quarantine = QuarantineStore(tmp_path / "q.db", flush_interval_s=0.01)
        self.readings: list[Reading] = []
        harness = self

        class Out:  # a rules engine that evaluates at once
            def offer_nowait(self, reading: Reading, device: DeviceInfo) -> bool:
                harness.readings.append(reading)
                return True

            async def offer(self, reading: Reading, device: DeviceInfo) -> None:
                harness.readings.append(reading)

            @property
            def offered(self) -> int:
                return len(harness.readings)

            def evaluated_through(self, seq: int) -> asyncio.Future[None]:
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                done.set_result(None)
                return done

        out = Out()

        self.pipeline = Pipeline(
            inputs=[
                Input(["city/+/+/+"], make_format("native", prefix="city")),
                Input(["v3/+/devices/+/up"], make_format("ttn")),
            ],
            directory=StaticDirectory(DEVICES),
            writer=self.writer,
            quarantine=self.quarantine,
            mapper=FieldMapper(),
            profiles=dict(builtin_profiles()),
            enrichers=default_enrichers(),
            readings_out=out,
        )

    async def send(self, topic: str, payload: object) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await asyncio.wait_for(self.pipeline.handle(topic, data, 1_795_741_300_000_000_000), 5)

    def stored(self) -> list:
        return [p for batch in self.sink.batches for p in batch]


@pytest.fixture
async def harness(tmp_path: Path):
    h = Harness(tmp_path)
    await h.writer.start()
    yield h
    await h.writer.close()
    await h.quarantine.close()


async def test_valid_native_message_is_stored_with_registry_tags_and_float_types(harness: Harness) -> None:
    await harness.send("city/laem-chabang/air/air-001", {"pm25_ugm3": 12, "humidity_pct": 70.5, "ts": TS_MS})
    [point] = harness.stored()
    assert point.measurement == "air_quality"
    assert point.tags["device_id"] == "air-001"
    assert point.tags["district"] == "ทุ่งสุขลา"
    assert point.tags["city"] == "laem-chabang" and point.tags["feed"] == "air"
    assert point.fields["pm25_ugm3"] == 12.0 and isinstance(point.fields["pm25_ugm3"], float)
    assert point.time_ns == TS_MS * 1_000_000
    assert "aqi_th" in point.fields  # derived values were added
    assert harness.readings and harness.readings[0].device_id == "air-001"


async def test_missing_ts_means_receive_time(harness: Harness) -> None:
    await harness.send("city/laem-chabang/flood/flood-001", {"level_m": 1.5})
    [point] = harness.stored()
    assert point.time_ns == 1_795_741_300_000_000_000
    assert point.fields["level_pct_bank"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail_part"),
    [
        ("city/laem-chabang/air/air-001", {"pm25_ugm3": 2000}, "invalid_field", "pm25_ugm3"),
        ("city/laem-chabang/air/air-001", {"pm25_ugm3": "high"}, "invalid_field", "pm25_ugm3"),
        ("city/laem-chabang/bus/bus-001", {"occupancy": 2.5}, "invalid_field", "occupancy"),
        ("city/laem-chabang/bus/bus-001", {"lat": 95.0}, "invalid_field", "lat"),
        ("city/laem-chabang/air/air-001", {"colour": "blue"}, "no_known_fields", "pm25_ugm3"),
        ("city/laem-chabang/air/ghost-9", {"pm25_ugm3": 10}, "unknown_device", "ghost-9"),
        ("city/pattaya/air/air-001", {"pm25_ugm3": 10}, "city_mismatch", "pattaya"),
        ("city/laem-chabang/flood/air-001", {"level_m": 1}, "feed_mismatch", "flood"),
        ("city/laem-chabang/energy/energy-001", {"power_kw": 1}, "retired_device", "retired"),
        ("city/laem-chabang/air/air-001", b"{not json", "bad_json", "JSON"),
        ("city/laem-chabang/air/air-001", {"pm25_ugm3": 1, "ts": "2026-11-21T08:00:00"}, "bad_time",
         "2026-11-21T08:00:00"),
        ("weird/topic", {"pm25_ugm3": 1}, "no_format", "no input"),
    ],
)
async def test_rejected_message_is_quarantined_with_reason(
    harness: Harness, topic: str, payload: object, reason: str, detail_part: str
) -> None:
    await harness.send(topic, payload)
    assert harness.stored() == []
    [row] = harness.quarantine.list()
    assert row.reason == reason
    assert detail_part and detail_part in row.detail
    assert row.topic == topic
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    assert row.payload == raw


async def test_bad_message_does_not_stop_the_next_one(harness: Harness) -> None:
    await harness.send("city/laem-chabang/air/air-001", b"\xff\xfe garbage")
    await harness.send("city/laem-chabang/air/air-001", {"pm25_ugm3": 20.0, "ts": TS_MS})
    assert len(harness.stored()) == 1
    assert len(harness.quarantine.list()) == 1


async def test_ttn_uplink_matched_by_dev_eui_and_mapped_through_profile(harness: Harness) -> None:
    uplink = {
        "end_device_ids": {"device_id": "some-label", "dev_eui": "70B3D57ED005AB12"},
        "received_at": "2026-11-21T02:20:00.123456789Z",
        "uplink_message": {"decoded_payload": {"pm2_5": 41.5, "temperature": 31.0}},
    }
    await harness.send("v3/city-app@ttn/devices/some-label/up", uplink)
    [point] = harness.stored()
    assert point.tags["device_id"] == "lora-air-7"
    assert point.fields["pm25_ugm3"] == pytest.approx(41.5)
    expected_s = int(datetime(2026, 11, 21, 2, 20, tzinfo=UTC).timestamp())
    assert point.time_ns == expected_s * 1_000_000_000 + 123_456_789


async def test_sink_rejected_point_is_isolated_and_reported(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.reject_if = lambda p: "field type conflict" if p.fields.get("humidity_pct") == 99.0 else None
    rejected: list[str] = []

    async def on_rejected(point, message: str) -> None:
        rejected.append(point.tags["device_id"] + ":" + message)

    writer = BatchWriter(sink, None, flush_interval_s=0.01, on_rejected=on_rejected)
    quarantine = QuarantineStore(tmp_path / "q.db")
    pipeline = Pipeline(
        inputs=[Input(["city/+/+/+"], make_format("native"))],
        directory=StaticDirectory(DEVICES),
        writer=writer,
        quarantine=quarantine,
    )
    await writer.start()
    await asyncio.gather(
        pipeline.handle("city/laem-chabang/air/air-001", b'{"humidity_pct": 50, "ts": 1795741200}', RECEIVED_NS),
        pipeline.handle("city/laem-chabang/air/air-001", b'{"humidity_pct": 99, "ts": 1795741201}', RECEIVED_NS),
    )
    await writer.close()
    await quarantine.close()
    assert [p.fields["humidity_pct"] for p in sink.query("air_quality")] == [50.0]
    assert len(rejected) == 1 and "field type conflict" in rejected[0]


@pytest.mark.parametrize(
    ("flt", "topic", "expected"),
    [
        ("city/+/+/+", "city/a/air/d1", True),
        ("city/+/+/+", "city/a/air", False),
        ("city/#", "city/a/air/d1", True),
        ("$share/nakhon/city/+/+/+", "city/a/air/d1", True),
        ("v3/+/devices/+/up", "v3/app@ttn/devices/d/up", True),
        ("v3/+/devices/+/up", "v3/app@ttn/devices/d/join", False),
    ],
)
def test_topic_filter_matching(flt: str, topic: str, expected: bool) -> None:
    assert topic_matches(flt, topic) is expected


async def test_calibration_override_applies_to_canonical_payloads(tmp_path: Path) -> None:
    sink = MemorySink()
    writer = BatchWriter(sink, None, flush_interval_s=0.01)
    quarantine = QuarantineStore(tmp_path / "q.db")
    device = DeviceInfo(
        "air-cal", "air", "laem-chabang", "บ่อวิน", calibration={"pm25_ugm3": {"scale": 0.5, "offset": 1.0}}
    )
    pipeline = Pipeline(
        inputs=[Input(["city/+/+/+"], make_format("native"))],
        directory=StaticDirectory([device]),
        writer=writer,
        quarantine=quarantine,
        mapper=FieldMapper(),
    )
    await writer.start()
    await pipeline.handle("city/laem-chabang/air/air-cal", b'{"pm25_ugm3": 40, "ts": 1795741200}', RECEIVED_NS)
    await writer.close()
    await quarantine.close()
    [point] = sink.query("air_quality")
    assert point.fields["pm25_ugm3"] == pytest.approx(21.0)


def native_pipeline(writer: BatchWriter, quarantine: QuarantineStore, queue: ReadingQueue) -> Pipeline:
    """A native-format pipeline over the static devices, handing readings to a real `ReadingQueue`."""
    return Pipeline(
        inputs=[Input(["city/+/+/+"], make_format("native"))],
        directory=StaticDirectory(DEVICES),
        writer=writer,
        quarantine=quarantine,
        readings_out=queue,
    )


async def test_full_rules_queue_holds_intake_and_hands_over_every_reading_in_order(tmp_path: Path) -> None:
    sink = MemorySink()
    writer = BatchWriter(sink, None, flush_interval_s=0.01)
    quarantine = QuarantineStore(tmp_path / "q.db")
    queue = ReadingQueue(maxsize=2)
    events: list[str] = []

    class Flow:
        def hold(self, reason: str) -> None:
            events.append(f"hold:{reason}")

        def release(self, reason: str) -> None:
            events.append(f"release:{reason}")

    pipeline = native_pipeline(writer, quarantine, queue)
    pipeline.flow = Flow()
    await writer.start()
    outcomes = [
        pipeline.submit("city/laem-chabang/air/air-001", f'{{"pm25_ugm3": {i}, "ts": {1795741200 + i}}}'.encode(),
                        RECEIVED_NS)
        for i in range(6)
    ]
    writer.flush()
    assert events == ["hold:rules"]
    seen: list[object] = []
    while len(seen) < 6:
        reading, _device = await asyncio.wait_for(queue.get(), 5)
        seen.append(reading.fields["pm25_ugm3"])
        queue.task_done()  # the engine evaluated it
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    await asyncio.wait_for(asyncio.gather(*outcomes), 5)
    assert events == ["hold:rules", "release:rules"]
    await writer.close()
    await quarantine.close()


async def test_a_stored_message_is_not_acknowledged_before_the_rules_engine_evaluated_its_reading(
    tmp_path: Path,
) -> None:
    """Attack: a crash between the InfluxDB write and the evaluation. The message's outcome (what the transport
    acknowledges on) waits for the engine, so the broker still holds it and redelivers it after a restart; an
    evaluation finished for later readings does not release earlier ones out of order (the engine finishes in
    queue order: one count)."""
    sink = MemorySink()
    writer = BatchWriter(sink, None, flush_interval_s=0.01)
    quarantine = QuarantineStore(tmp_path / "q.db")
    queue = ReadingQueue(maxsize=100)
    pipeline = native_pipeline(writer, quarantine, queue)
    await writer.start()
    first = [pipeline.submit("city/laem-chabang/air/air-001",
                             f'{{"pm25_ugm3": {i}, "ts": {1795741200 + i}}}'.encode(), RECEIVED_NS) for i in range(3)]
    writer.flush()
    later = pipeline.submit("city/laem-chabang/air/air-001", b'{"pm25_ugm3": 9, "ts": 1795741300}', RECEIVED_NS)
    writer.flush()
    for _ in range(20):  # the data is stored ...
        await asyncio.sleep(0.01)
    assert len([p for batch in sink.batches for p in batch]) == 4
    assert not any(f.done() for f in [*first, later])  # ... but nothing evaluated: nothing acknowledged
    for _ in range(2):
        queue.get_nowait()
        queue.task_done()
    await asyncio.sleep(0.05)
    assert not any(f.done() for f in [*first, later])  # two of the first batch's three: still not
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(asyncio.gather(*first), 5)
    assert not later.done()  # the next batch's reading is not evaluated yet
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(later, 5)
    await writer.close()
    await quarantine.close()
