"""Each feed's sample payloads (collectors/feeds/<feed>/testdata) through the real pipeline: the valid ones are
stored with their canonical fields, the invalid ones are quarantined as `invalid_field` naming the field."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from collectors.directory import StaticDirectory
from collectors.feeds import FEED_SPECS
from collectors.formats import make_format
from collectors.pipeline import Input, Pipeline
from collectors.quarantine import QuarantineStore
from collectors.sinks.memory import MemorySink
from collectors.sinks.writer import BatchWriter
from core.model import DeviceInfo

FEEDS_DIR = Path(__file__).resolve().parents[3] / "collectors" / "feeds"


def samples(feed: str, kind: str) -> list[bytes]:
    lines = (FEEDS_DIR / feed / "testdata" / f"{kind}.jsonl").read_text().splitlines()
    return [line.encode() for line in lines if line.strip()]


@pytest.mark.parametrize("feed", sorted(FEED_SPECS))
async def test_feed_samples(feed: str, tmp_path: Path) -> None:
    device = DeviceInfo(f"{feed}-sample", feed, "laem-chabang", "บ่อวิน")
    sink = MemorySink()
    writer = BatchWriter(sink, None, flush_interval_s=0.01)
    quarantine = QuarantineStore(tmp_path / "q.db")
    pipeline = Pipeline(inputs=[Input(["city/+/+/+"], make_format("native"))], directory=StaticDirectory([device]),
                        writer=writer, quarantine=quarantine)
    topic = f"city/laem-chabang/{feed}/{device.device_id}"
    valid, invalid = samples(feed, "valid"), samples(feed, "invalid")
    assert valid and invalid
    for i, payload in enumerate(valid):
        body = orjson.loads(payload)
        body.setdefault("ts", 1_795_741_200 + i)  # distinct times: each sample is its own point
        await pipeline.handle(topic, orjson.dumps(body), time.time_ns())
    for payload in invalid:
        # received now: the quarantine drops rows received longer ago than its max age
        await pipeline.handle(topic, payload, time.time_ns())
    await writer.close()
    stored = sink.query(FEED_SPECS[feed].measurement)
    assert len(stored) == len(valid)
    for point in stored:
        assert set(point.fields) <= set(FEED_SPECS[feed].field_names)
    rows = quarantine.list()
    assert len(rows) == len(invalid)
    for row in rows:
        assert row.reason == "invalid_field"
        bad_keys = [k for k in orjson.loads(row.payload) if k != "ts"]
        assert any(k in row.detail for k in bad_keys)
    await quarantine.close()


@pytest.mark.parametrize("feed", sorted(FEED_SPECS))
async def test_feed_sentinels_are_missing_values(feed: str, tmp_path: Path) -> None:
    device = DeviceInfo(f"{feed}-sample", feed, "laem-chabang", "บ่อวิน")
    sink = MemorySink()
    writer = BatchWriter(sink, None, flush_interval_s=0.01)
    quarantine = QuarantineStore(tmp_path / "q.db")
    pipeline = Pipeline(inputs=[Input(["city/+/+/+"], make_format("native"))], directory=StaticDirectory([device]),
                        writer=writer, quarantine=quarantine)
    sentinels = FEED_SPECS[feed].sentinel_sets()
    payloads = samples(feed, "sentinels")
    assert payloads
    for payload in payloads:
        await pipeline.handle(f"city/laem-chabang/{feed}/{device.device_id}", payload, time.time_ns())
    await writer.close()
    assert quarantine.list() == []
    stored = sink.query(FEED_SPECS[feed].measurement)
    assert len(stored) == len(payloads)
    for payload, point in zip(payloads, sorted(stored, key=lambda p: p.time_ns), strict=True):
        body = orjson.loads(payload)
        dropped = {k for k, v in body.items() if k in sentinels and v in sentinels[k]}
        assert dropped and not dropped & set(point.fields)
        assert set(body) - dropped - {"ts"} <= set(point.fields)
    await quarantine.close()
