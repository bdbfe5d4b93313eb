"""Junk cannot grow the collectors' memory: a flood of distinct unknown device ids stays in a small LRU of its
own (registered devices keep their diagnostics), payloads are kept truncated, oversized payloads are
quarantined `too_large` before parsing, and QoS 0 messages count against the in-flight limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from collectors.diagnostics import MAX_PAYLOAD_BYTES, DiagnosticsBuffer
from collectors.directory import StaticDirectory
from collectors.sinks.memory import MemorySink
from core.model import DeviceInfo
from nakhon.collector_wiring import build_collector
from nakhon.config import load_settings
from tests.faults.mqtt_helpers import Recorder, durable_broker, wait_until
from tests.faults.test_mqtt_faults import subscriber
from tests.publishing import AckingPublisher


def test_a_flood_of_distinct_unknown_ids_never_evicts_registered_devices() -> None:
    registered = {f"air-{n}" for n in range(50)}
    buffer = DiagnosticsBuffer(is_registered=registered.__contains__, max_unknown=1000)
    for device in sorted(registered):
        buffer.record(device, topic="t", payload=b"ok", received_ns=1, accepted=True)
    for i in range(100_000):
        buffer.record(f"junk-{i}", topic="t", payload=b"x" * 1000, received_ns=2, accepted=False, reason="bad")
    assert buffer.size == 50 + 1000
    assert all(buffer.get(device) is not None for device in registered)
    assert buffer.get("junk-0") is None and buffer.get("junk-99999") is not None


def test_diagnostics_keep_payloads_truncated() -> None:
    buffer = DiagnosticsBuffer()
    buffer.record("air-1", topic="t", payload=b"{" + b"x" * 1_000_000, received_ns=1, accepted=False, reason="bad")
    diag = buffer.get("air-1")
    assert diag is not None and all(len(raw[2]) <= MAX_PAYLOAD_BYTES for raw in diag.raw)


async def test_oversized_payloads_are_quarantined_too_large_and_the_rest_flows(tmp_path: Path,
                                                                               broker_workdir: Path) -> None:
    device = DeviceInfo("air-big", "air", "laem-chabang", "บ่อวิน")
    with durable_broker(broker_workdir) as broker:
        settings = load_settings(None, data_dir=tmp_path / "data",
                                 mqtt={"url": broker.url, "client_id": "junk-big", "max_payload_bytes": 4096})
        sink = MemorySink()
        collector = build_collector(settings, StaticDirectory([device]), sink=sink)
        await collector.start()
        publisher = AckingPublisher(broker.port, client_id="junk-big-pub")
        topic = f"city/laem-chabang/air/{device.device_id}"
        publisher.publish(topic, b'{"pm25_ugm3": "' + b"9" * 20_000 + b'"}')  # above the limit, below the packet cap
        publisher.publish(topic, orjson.dumps({"pm25_ugm3": 12.5, "ts": 1_795_000_000_000}))
        assert await asyncio.to_thread(publisher.wait_all_acked, 20)
        publisher.close()
        assert await wait_until(lambda: len(sink.query("air_quality")) == 1
                                and sum(n for *_, n in collector.quarantine.counts()) == 1)
        [row] = collector.quarantine.list()
        assert row.reason == "too_large" and row.payload_size > 20_000 and len(row.payload) <= 4096
        await collector.close()


async def test_qos0_messages_count_against_the_in_flight_limit(broker_workdir: Path) -> None:
    recorder = Recorder()
    recorder.hold_outcomes = True
    with durable_broker(broker_workdir) as broker:
        sub = subscriber(broker.port, recorder, "junk-qos0", receive_maximum=100)
        await sub.start()
        publisher = AckingPublisher(broker.port, client_id="junk-qos0-pub")
        for i in range(5000):
            publisher.client.publish(f"t/{i % 5}", f"q0-{i}".encode(), qos=0)
        assert await wait_until(lambda: sub.paused and sub.in_flight >= 100)
        held = len(recorder.deliveries)
        assert held < 5000  # reading stopped: QoS 0 is flow-controlled like QoS 1
        recorder.settle()
        recorder.hold_outcomes = False
        assert await wait_until(lambda: len(recorder.deliveries) > held)
        publisher.close()
        await sub.close()
