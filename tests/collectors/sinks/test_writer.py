"""BatchWriter with in-process sinks: batching, backpressure, retries, isolation of refused points, spool, close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from collectors.errors import SinkRejected
from collectors.metrics import POINTS_STORED, SINK_UP, SINK_WRITE_ERRORS, SPOOL_FULL
from collectors.sinks.base import SinkConfigError
from collectors.sinks.memory import MemorySink
from collectors.sinks.spool import DiskSpool
from collectors.sinks.writer import BatchWriter, WriterClosed, WriterFull
from core.model import Point

from .helpers import pt

FAST = {"retry_initial_s": 0.01, "retry_max_s": 0.05, "retry_budget_s": 0.05}


class GatedSink(MemorySink):
    """A MemorySink whose writes wait until `gate` is set (a slow store)."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.gate = asyncio.Event()

    async def write(self, points: Sequence[Point]) -> None:
        await self.gate.wait()
        await super().write(points)


class OpaqueRejectSink(MemorySink):
    """Refuses a batch holding a bad point without naming it (like InfluxDB's 400), writing the good ones."""

    async def write(self, points: Sequence[Point]) -> None:
        try:
            await super().write(points)
        except SinkRejected as exc:
            raise SinkRejected(f"opaque: {exc}") from None


def stored_times(sink: MemorySink) -> list[int]:
    return [p.time_ns for p in sink.query("air_quality")]


async def test_batches_by_size_with_one_future_per_batch() -> None:
    sink = MemorySink()
    writer = BatchWriter(sink, None, max_batch_points=100, flush_interval_s=1.0)
    futures = [writer.add(pt(i)) for i in range(250)]
    assert len({id(f) for f in futures}) == 3
    assert futures[0] is futures[99] and futures[100] is futures[199] and futures[200] is futures[249]
    await asyncio.gather(futures[0], futures[100])
    assert sorted(len(b) for b in sink.batches) == [100, 100]
    assert not futures[200].done()  # the partial batch waits for its flush interval
    await futures[200]
    assert [len(b) for b in sink.batches][-1] == 50
    assert stored_times(sink) == [pt(i).time_ns for i in range(250)]
    await writer.close()


async def test_batches_by_time() -> None:
    sink = MemorySink()
    writer = BatchWriter(sink, None, max_batch_points=1000, flush_interval_s=0.05)
    futures = [writer.add(pt(i)) for i in range(5)]
    await futures[0]
    assert [len(b) for b in sink.batches] == [5]
    await writer.close()


def test_flush_interval_above_one_second_must_be_explicit() -> None:
    with pytest.raises(ValueError, match="1 s"):
        BatchWriter(MemorySink(), None, flush_interval_s=2.0)
    BatchWriter(MemorySink(), None, flush_interval_s=2.0, allow_long_flush_interval=True)
    with pytest.raises(ValueError):
        BatchWriter(MemorySink(), None, max_batch_points=10, max_pending_points=5)


async def test_backpressure_add_raises_and_add_wait_waits() -> None:
    sink = GatedSink()
    writer = BatchWriter(sink, None, max_batch_points=5, max_pending_points=10, flush_interval_s=0.01)
    futures = [writer.add(pt(i)) for i in range(10)]
    with pytest.raises(WriterFull) as info:
        writer.add(pt(10))
    assert info.value.pending == 10 and writer.health()["pending_points"] == 10
    waiter = asyncio.create_task(writer.add_wait(pt(10)))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # waiting for space, not growing
    sink.gate.set()
    await asyncio.gather(*futures)
    late = await waiter
    await late
    assert len(stored_times(sink)) == 11
    await writer.close()


async def test_transient_unavailability_is_retried_without_spooling(spool_dir: Path) -> None:
    sink = MemorySink()
    sink.fail_next = 2
    errors = SINK_WRITE_ERRORS.labels("memory", "unavailable")._value.get()
    with DiskSpool(spool_dir, 1 << 20) as spool:
        writer = BatchWriter(sink, spool, max_batch_points=10, retry_initial_s=0.01, retry_budget_s=5.0)
        await writer.add(pt(0))
        assert SINK_WRITE_ERRORS.labels("memory", "unavailable")._value.get() == errors + 2
        assert stored_times(sink) == [pt(0).time_ns] and spool.empty
        assert writer.health()["sink_up"] is True
        await writer.close()


@pytest.mark.parametrize("sink_cls", [MemorySink, OpaqueRejectSink])
async def test_refused_points_are_isolated_exactly(sink_cls: type[MemorySink]) -> None:
    sink = sink_cls()
    sink.reject_if = lambda p: "negative" if p.fields["pm25"] < 0 else None
    rejected: list[tuple[Point, str]] = []

    async def on_rejected(point: Point, message: str) -> None:
        rejected.append((point, message))

    writer = BatchWriter(sink, None, max_batch_points=64, on_rejected=on_rejected)
    points = [pt(i, pm25=-1.0 if i in (3, 17, 40, 41) else float(i)) for i in range(64)]
    futures = [writer.add(p) for p in points]
    await futures[0]
    assert [p.time_ns for p, _ in rejected] == [points[i].time_ns for i in (3, 17, 40, 41)]
    assert all("negative" in m for _, m in rejected)
    assert len(stored_times(sink)) == 60
    assert writer.health()["rejected_points"] == 4
    await writer.close()


async def test_on_rejected_failure_fails_the_batch_future() -> None:
    sink = MemorySink()
    sink.reject_if = lambda p: "bad"

    async def on_rejected(point: Point, message: str) -> None:
        raise OSError("quarantine disk gone")

    writer = BatchWriter(sink, None, on_rejected=on_rejected)
    with pytest.raises(OSError):
        await writer.add(pt(0))
    await writer.close()


async def test_sink_down_spools_then_replays_in_order(spool_dir: Path) -> None:
    sink = MemorySink()
    stored_before = POINTS_STORED.labels("air")._value.get()
    with DiskSpool(spool_dir, 1 << 20) as spool:
        writer = BatchWriter(sink, spool, max_batch_points=10, flush_interval_s=0.01, **FAST)
        await writer.add(pt(0))
        sink.unavailable = True
        futures = [writer.add(pt(i)) for i in range(1, 41)]
        await asyncio.gather(*futures)  # durable in the spool: acknowledged while the sink is down
        health = writer.health()
        assert health["state"] == "sink_down" and health["sink_up"] is False
        assert health["spool_points"] == 40
        assert SINK_UP.labels("memory")._value.get() == 0
        assert POINTS_STORED.labels("air")._value.get() == stored_before + 41
        assert stored_times(sink) == [pt(0).time_ns]
        sink.unavailable = False
        while writer.health()["spooling"]:
            await asyncio.sleep(0.01)
        assert spool.empty and writer.state == "ok" and SINK_UP.labels("memory")._value.get() == 1
        replayed = [p.time_ns for b in sink.batches[1:] for p in b]
        assert replayed == [pt(i).time_ns for i in range(1, 41)]  # oldest first
        await writer.add(pt(41))  # direct writes resumed
        assert sink.batches[-1] == [pt(41)]
        assert POINTS_STORED.labels("air")._value.get() == stored_before + 42  # replay is not counted twice
        await writer.close()


async def test_config_error_spools_instead_of_quarantining(spool_dir: Path) -> None:
    class Unauthorized(MemorySink):
        denied = True

        async def write(self, points: Sequence[Point]) -> None:
            if self.denied:
                raise SinkConfigError("memory: HTTP 401: authorization failed")
            await super().write(points)

    sink = Unauthorized()
    rejected: list[Point] = []

    async def on_rejected(point: Point, message: str) -> None:
        rejected.append(point)

    with DiskSpool(spool_dir, 1 << 20) as spool:
        writer = BatchWriter(sink, spool, on_rejected=on_rejected, **FAST)
        await writer.add(pt(0))
        assert rejected == [] and spool.points == 1 and writer.state == "sink_down"
        sink.denied = False
        while not spool.empty:
            await asyncio.sleep(0.01)
        assert stored_times(sink) == [pt(0).time_ns]
        await writer.close()


async def test_spool_full_keeps_futures_pending_and_loses_nothing(spool_dir: Path) -> None:
    sink = MemorySink()
    sink.unavailable = True
    with DiskSpool(spool_dir, 6000) as spool:
        writer = BatchWriter(sink, spool, max_batch_points=10, flush_interval_s=0.01, max_pending_points=500, **FAST)
        futures = [writer.add(pt(i)) for i in range(200)]
        while writer.state != "spool_full":
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        pending = [f for f in futures if not f.done()]
        assert pending, "a batch that does not fit must not be acknowledged"
        assert all(not f.done() or f.exception() is None for f in futures)
        health = writer.health()
        assert health["spool_full"] is True and SPOOL_FULL._value.get() == 1
        assert health["spool_points"] + health["pending_points"] == 200  # nothing dropped, nothing counted twice
        sink.unavailable = False
        await asyncio.gather(*futures)
        while writer.health()["spooling"]:
            await asyncio.sleep(0.01)
        assert stored_times(sink) == [pt(i).time_ns for i in range(200)]
        assert writer.health()["spool_full"] is False and SPOOL_FULL._value.get() == 0
        await writer.close()


async def test_close_flushes_everything_pending() -> None:
    sink = MemorySink()
    writer = BatchWriter(sink, None, max_batch_points=1000, flush_interval_s=1.0)
    futures = [writer.add(pt(i)) for i in range(30)]
    await writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert len(stored_times(sink)) == 30 and sink.closed
    with pytest.raises(WriterClosed):
        writer.add(pt(99))


async def test_spool_left_by_a_previous_run_is_replayed_first(spool_dir: Path) -> None:
    down = MemorySink()
    down.unavailable = True
    writer = BatchWriter(down, DiskSpool(spool_dir, 1 << 20), max_batch_points=5, **FAST)
    await asyncio.gather(*[writer.add(pt(i)) for i in range(10)])
    await writer.close(timeout_s=0.2)  # the sink stays down: the spool keeps the points
    sink = MemorySink()
    writer = BatchWriter(sink, DiskSpool(spool_dir, 1 << 20), max_batch_points=5, **FAST)
    assert writer.health()["spool_points"] == 10 and writer.state == "draining"
    await writer.add(pt(10))
    await writer.close()
    assert [p.time_ns for b in sink.batches for p in b] == [pt(i).time_ns for i in range(11)]


async def test_close_gives_up_on_batches_it_cannot_store() -> None:
    sink = MemorySink()
    sink.unavailable = True
    writer = BatchWriter(sink, None, **FAST)  # no spool: nowhere durable to put them
    future = writer.add(pt(0))
    await writer.close(timeout_s=0.2)
    with pytest.raises(WriterClosed):
        await future
