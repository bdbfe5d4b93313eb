"""InfluxDB refusing points, for real: a field type conflict is read from the partial-write answer (the refused
points are quarantined together, the rest stored, in a few writes rather than a bisection per point), a 413
shrinks the batches instead of blaming points, and a sink that refuses most points is reported."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from collectors.sinks.influx import InfluxV1Sink
from collectors.sinks.spool import DiskSpool
from collectors.sinks.writer import BatchWriter
from core.model import Point
from tests.collectors.sinks.helpers import T0, influx_points
from tests.servers import InfluxServer


class CountingSink(InfluxV1Sink):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.writes = 0

    async def write(self, points: Sequence[Point]) -> None:
        self.writes += 1
        await super().write(points)


class Quarantine:
    def __init__(self) -> None:
        self.points: list[Point] = []
        self.messages: list[str] = []

    async def __call__(self, point: Point, message: str) -> None:
        self.points.append(point)
        self.messages.append(message)


async def test_type_conflict_on_most_points_is_isolated_from_the_answer_in_a_few_writes(tmp_path: Path) -> None:
    with InfluxServer(tmp_path) as influx:
        sink = CountingSink(influx.url, influx.database)
        await sink.write([Point("air", {"device_id": "seed"}, {"pm25": "a string first"}, T0)])
        sink.writes = 0
        quarantine = Quarantine()
        writer = BatchWriter(sink, None, max_batch_points=1000, max_pending_points=10_000, on_rejected=quarantine)
        points = [
            # three of four conflict (pm25 is a string field now); every fourth, on another field, is fine
            Point("air", {"device_id": f"d{i % 200}"}, {"pm10": float(i)} if i % 4 == 0 else {"pm25": float(i)},
                  T0 + 1 + i)
            for i in range(4000)
        ]
        await asyncio.gather(*[writer.add(p) for p in points])
        health = writer.health()
        await writer.close()
        conflicting = {p.time_ns for p in points if "pm25" in p.fields}
        assert {p.time_ns for p in quarantine.points} == conflicting and len(quarantine.points) == 3000
        assert all("field type conflict" in m for m in quarantine.messages)
        stored = [p for p in influx_points(influx, "air") if p.tags["device_id"] != "seed"]
        assert sorted(p.time_ns for p in stored) == sorted(p.time_ns for p in points if "pm10" in p.fields)
        # one write per batch of 1,000: the answer named the refused points, and said the rest were stored
        assert sink.writes == 4
        assert health["refusing"] is True and health["refused_share_1m"] == 0.75
        assert "field type conflict" in health["last_refusal"]


async def test_413_shrinks_the_batches_and_blames_no_point(tmp_path: Path) -> None:
    with InfluxServer(tmp_path, max_body_bytes=20_000) as influx:
        sink = InfluxV1Sink(influx.url, influx.database, gzip=False)  # the limit applies to the body as sent
        quarantine = Quarantine()
        writer = BatchWriter(sink, None, max_batch_points=1000, max_pending_points=10_000, on_rejected=quarantine)
        points = [Point("water", {"device_id": f"w{i % 50}"}, {"level_m": i / 10}, T0 + i) for i in range(3000)]
        await asyncio.gather(*[writer.add(p) for p in points])
        shrunk_to = writer.max_batch_points
        await writer.close()
        assert quarantine.points == []
        assert sorted(p.time_ns for p in influx_points(influx, "water")) == [p.time_ns for p in points]
        assert shrunk_to < 1000


async def test_a_point_larger_than_the_servers_limit_waits_in_the_spool_until_the_limit_is_raised(
    tmp_path: Path,
) -> None:
    influx = InfluxServer(tmp_path, max_body_bytes=5_000)
    with influx:
        sink = InfluxV1Sink(influx.url, influx.database, gzip=False)
        quarantine = Quarantine()
        writer = BatchWriter(sink, DiskSpool(tmp_path / "spool", 10_000_000), max_batch_points=10,
                             on_rejected=quarantine, retry_max_s=0.5)
        big = Point("notes", {"device_id": "n1"}, {"text": "x" * 8_000}, T0)
        small = [Point("notes", {"device_id": "n1"}, {"text": f"short {i}"}, T0 + 1 + i) for i in range(5)]
        await asyncio.gather(writer.add(big), *[writer.add(p) for p in small])  # durable: in the spool
        assert writer.health()["sink_up"] is False and writer.health()["spool_points"] >= 1
        assert quarantine.points == []
        influx.stop()
        influx.max_body_bytes = 0  # the operator raises the limit
        influx.start()
        for _ in range(200):
            if writer.health()["state"] == "ok":
                break
            await asyncio.sleep(0.1)
        await writer.close()
        assert quarantine.points == []
        assert sorted(p.time_ns for p in influx_points(influx, "notes")) == [T0 + i for i in range(6)]
