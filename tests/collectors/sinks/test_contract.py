"""One contract, three sinks: InfluxV1Sink (a real influxd), SQLiteSink and MemorySink store and read back alike."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collectors.errors import SinkRejected
from collectors.sinks.base import Sink, series_key
from collectors.sinks.influx import InfluxV1Sink
from collectors.sinks.memory import MemorySink
from collectors.sinks.sqlite import SQLiteSink
from core.model import Point
from tests.servers import InfluxServer

from .helpers import T0, influx_field_types, influx_points, pt


@dataclass
class Store:
    kind: str
    sink: Sink
    influx: InfluxServer | None = None

    def read(self, measurement: str) -> list[Point]:
        if self.influx is not None:
            return influx_points(self.influx, measurement)
        assert isinstance(self.sink, SQLiteSink | MemorySink)
        return sorted(self.sink.query(measurement), key=lambda p: (p.time_ns, sorted(p.tags.items())))

    def field_types(self, measurement: str) -> dict[str, str]:
        if self.influx is not None:
            return influx_field_types(self.influx, measurement)
        types = {"float": "float", "int": "integer", "bool": "boolean", "str": "string"}
        out: dict[str, str] = {}
        for p in self.read(measurement):
            for k, v in p.fields.items():
                out[k] = types[type(v).__name__]
        return out


@pytest.fixture(params=["influx", "sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "influx":
        influx: InfluxServer = request.getfixturevalue("influx")
        s = Store("influx", InfluxV1Sink(influx.url, influx.database), influx)
    elif request.param == "sqlite":
        s = Store("sqlite", SQLiteSink(tmp_path / "nakhon.db"))
    else:
        s = Store("memory", MemorySink())
    yield s
    await s.sink.close()


def normalized(points: list[Point]) -> list[Point]:
    """What a store is expected to hold: empty tag values dropped, sorted like Store.read."""
    out = [Point(p.measurement, {k: v for k, v in p.tags.items() if v}, dict(p.fields), p.time_ns) for p in points]
    return sorted(out, key=lambda p: (p.time_ns, sorted(p.tags.items())))


async def test_is_a_sink(store: Store) -> None:
    assert isinstance(store.sink, Sink)
    assert await store.sink.ping() is True


async def test_write_then_read_back_exactly(store: Store, measurement: str) -> None:
    points = [
        pt(i, measurement, device=f"air-{i % 3}", pm25=i + 0.5, count=i, ok=i % 2 == 0, status=f"s{i}")
        for i in range(60)
    ]
    await store.sink.write(points)
    got = store.read(measurement)
    assert len(got) == 60
    assert got == normalized(points)


async def test_escaping_and_thai_text(store: Store) -> None:
    measurement = "city air,quality"
    tags = {"device_id": "x=1", "district": "เขต บางรัก", "note": "a,b=c d", "odd key=,": "v"}
    fields = {
        "pm 2,5=x": 12.5,
        "quote": 'say "hi" and \\ back\\slash \\',
        "thai": "น้ำท่วมสูง 30 ซม.",
        "multi": "line1\nline2",
    }
    points = [Point(measurement, tags, fields, T0), Point(measurement, {**tags, "note": "other"}, fields, T0)]
    await store.sink.write(points)
    assert store.read(measurement) == normalized(points)


async def test_integral_float_stays_float(store: Store, measurement: str) -> None:
    await store.sink.write([Point(measurement, {"device_id": "a"}, {"level": 12.0}, T0)])
    got = store.read(measurement)
    assert got[0].fields == {"level": 12.0}
    assert type(got[0].fields["level"]) is float
    assert store.field_types(measurement) == {"level": "float"}


async def test_int_bool_string_fields_keep_their_types(store: Store, measurement: str) -> None:
    await store.sink.write([Point(measurement, {"device_id": "a"}, {"i": 7, "b": True, "s": "เปิด", "f": 1e16}, T0)])
    got = store.read(measurement)[0].fields
    assert got == {"i": 7, "b": True, "s": "เปิด", "f": 1e16}
    assert {k: type(v) for k, v in got.items()} == {"i": int, "b": bool, "s": str, "f": float}
    assert store.field_types(measurement) == {"i": "integer", "b": "boolean", "s": "string", "f": "float"}


async def test_rewrite_is_idempotent_and_merges_fields(store: Store, measurement: str) -> None:
    points = [pt(i, measurement) for i in range(20)]
    await store.sink.write(points)
    await store.sink.write(points)
    assert len(store.read(measurement)) == 20
    # same series and time, another field: one point holding both, the later value winning
    await store.sink.write([Point(measurement, dict(points[0].tags), {"pm25": 99.0, "extra": "x"}, points[0].time_ns)])
    got = store.read(measurement)
    assert len(got) == 20
    assert got[0].fields == {"pm25": 99.0, "n": 0, "extra": "x"}


async def test_empty_tag_values_are_omitted(store: Store, measurement: str) -> None:
    with_empty = Point(measurement, {"device_id": "a", "district": ""}, {"v": 1.0}, T0)
    without = Point(measurement, {"device_id": "a"}, {"w": 2.0}, T0)
    await store.sink.write([with_empty, without])
    got = store.read(measurement)
    assert got == [Point(measurement, {"device_id": "a"}, {"v": 1.0, "w": 2.0}, T0)]  # one series


async def test_field_type_conflict_is_rejected_and_the_rest_stored(store: Store, measurement: str) -> None:
    await store.sink.write([Point(measurement, {"device_id": "a"}, {"x": 1.0}, T0)])
    batch = [
        Point(measurement, {"device_id": "a"}, {"x": 2.0}, T0 + 1),
        Point(measurement, {"device_id": "a"}, {"x": "a"}, T0 + 2),
        Point(measurement, {"device_id": "a"}, {"x": 3.0}, T0 + 3),
    ]
    with pytest.raises(SinkRejected) as info:
        await store.sink.write(batch)
    assert "conflict" in str(info.value)
    assert [p.fields["x"] for p in store.read(measurement)] == [1.0, 2.0, 3.0]


async def test_non_finite_float_is_rejected_with_its_index(store: Store, measurement: str) -> None:
    batch = [pt(0, measurement), pt(1, measurement, pm25=math.nan), pt(2, measurement, pm25=math.inf)]
    batch.append(pt(3, measurement))
    with pytest.raises(SinkRejected) as info:
        await store.sink.write(batch)
    assert info.value.bad_indexes == [1, 2]
    assert [p.time_ns for p in store.read(measurement)] == [batch[0].time_ns, batch[3].time_ns]


async def test_empty_write_is_a_no_op(store: Store, measurement: str) -> None:
    await store.sink.write([])
    assert store.read(measurement) == []


def test_series_key_is_canonical() -> None:
    assert series_key({"b": "2", "a": "1 ,=", "c": ""}) == "a=1\\ \\,\\=,b=2"
