"""DiskSpool: durable append, in-order replay, commit, limits, crash recovery (torn records), restarts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collectors.errors import SinkUnavailable, SpoolFull
from collectors.metrics import SPOOL_BYTES, SPOOL_DEPTH_POINTS, SPOOL_FULL
from collectors.sinks.memory import MemorySink
from collectors.sinks.spool import DiskSpool
from core.model import Point

from .helpers import pt


def batch(start: int, n: int) -> list[Point]:
    return [pt(i, pm25=float(i), n=i, note=f"ค่า {i}", ok=i % 2 == 0) for i in range(start, start + n)]


def replay_all(spool: DiskSpool) -> list[list[Point]]:
    out = []
    while (b := spool.peek()) is not None:
        out.append(b.points)
        spool.commit(b)
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.spool"))


def test_append_peek_commit_in_order(spool_dir: Path) -> None:
    with DiskSpool(spool_dir, 1 << 20) as spool:
        assert spool.empty and spool.peek() is None
        batches = [batch(0, 3), batch(3, 2), batch(5, 4)]
        for b in batches:
            spool.append(b)
        assert spool.depth()[0] == 9 and spool.batches == 3
        assert SPOOL_DEPTH_POINTS._value.get() == 9
        assert SPOOL_BYTES._value.get() == spool.size_bytes > 0
        head = spool.peek()
        assert head is not None and head.points == batches[0]
        assert spool.peek() == head  # peek does not consume
        assert replay_all(spool) == batches
        assert spool.empty and spool.points == 0 and spool.size_bytes == 0
        assert segments(spool_dir) == []  # replayed segments are deleted


def test_values_keep_their_types(spool_dir: Path) -> None:
    p = Point("m", {"d": "เขต บางรัก"}, {"f": 12.0, "i": 12, "b": True, "s": 'q"\\'}, 5)
    with DiskSpool(spool_dir, 1 << 20) as spool:
        spool.append([p])
        got = spool.peek()
    assert got is not None and got.points == [p]
    assert type(got.points[0].fields["f"]) is float and type(got.points[0].fields["i"]) is int


def test_commit_must_name_the_head(spool_dir: Path) -> None:
    with DiskSpool(spool_dir, 1 << 20) as spool:
        spool.append(batch(0, 1))
        spool.append(batch(1, 1))
        first = spool.peek()
        assert first is not None
        spool.commit(first)
        with pytest.raises(ValueError):
            spool.commit(first)


def test_full_spool_refuses_and_writes_nothing(spool_dir: Path) -> None:
    with DiskSpool(spool_dir, 2000) as spool:
        appended = 0
        with pytest.raises(SpoolFull) as info:
            while True:
                spool.append(batch(appended, 2))
                appended += 2
        assert "full" in str(info.value)
        assert spool.full and SPOOL_FULL._value.get() == 1
        before = (spool.points, spool.size_bytes)
        assert before[0] == appended and before[1] <= 2000
        assert sum(f.stat().st_size for f in segments(spool_dir)) == before[1]
        head = spool.peek()
        assert head is not None
        spool.commit(head)
        assert not spool.full and SPOOL_FULL._value.get() == 0


def test_rotates_segments_and_deletes_replayed_ones(spool_dir: Path) -> None:
    with DiskSpool(spool_dir, 1 << 20, segment_bytes=1500) as spool:
        batches = [batch(i * 4, 4) for i in range(10)]
        for b in batches:
            spool.append(b)
        n_segments = len(segments(spool_dir))
        assert n_segments > 2
        for _ in range(5):
            head = spool.peek()
            assert head is not None
            spool.commit(head)
        assert len(segments(spool_dir)) < n_segments
        assert replay_all(spool) == batches[5:]


def test_survives_a_new_process(spool_dir: Path) -> None:
    code = (
        "import sys; from collectors.sinks.spool import DiskSpool\n"
        "from tests.collectors.sinks.test_spool import batch\n"
        "s = DiskSpool(sys.argv[1], 1 << 20)\n"
        "for k in range(4): s.append(batch(k * 10, 10))\n"
        "os_exit = __import__('os')._exit; os_exit(0)\n"  # no close(): as if the process died
    )
    subprocess.run([sys.executable, "-c", code, str(spool_dir)], check=True, cwd=Path(__file__).parents[3])
    with DiskSpool(spool_dir, 1 << 20) as spool:
        assert spool.points == 40
        assert replay_all(spool) == [batch(k * 10, 10) for k in range(4)]


def test_partly_replayed_spool_resumes_after_the_last_commit(spool_dir: Path) -> None:
    with DiskSpool(spool_dir, 1 << 20) as spool:
        for k in range(3):
            spool.append(batch(k * 5, 5))
        head = spool.peek()
        assert head is not None
        spool.commit(head)
    with DiskSpool(spool_dir, 1 << 20) as spool:
        assert replay_all(spool) == [batch(5, 5), batch(10, 5)]


def test_fully_replayed_then_reopened_never_reuses_a_replayed_segment(spool_dir: Path) -> None:
    with DiskSpool(spool_dir, 1 << 20) as spool:
        spool.append(batch(0, 2))
        replay_all(spool)
    with DiskSpool(spool_dir, 1 << 20) as spool:
        spool.append(batch(2, 2))
    with DiskSpool(spool_dir, 1 << 20) as spool:
        assert replay_all(spool) == [batch(2, 2)]


@pytest.mark.parametrize("damage", ["truncate_payload", "truncate_header", "flip_byte"])
def test_torn_last_record_is_skipped(spool_dir: Path, damage: str) -> None:
    with DiskSpool(spool_dir, 1 << 20) as spool:
        for k in range(3):
            spool.append(batch(k * 3, 3))
        last = spool._records[-1]
    (seg,) = segments(spool_dir)
    data = bytearray(seg.read_bytes())
    if damage == "truncate_payload":
        data = data[:-7]
    elif damage == "truncate_header":
        data = data[: last.offset + 5]
    else:
        data[-3] ^= 0xFF
    seg.write_bytes(bytes(data))
    with DiskSpool(spool_dir, 1 << 20) as spool:
        assert spool.skipped_records == 1
        assert spool.points == 6
        assert seg.stat().st_size == last.offset  # truncated at the torn record
        spool.append(batch(100, 1))  # appends after a torn tail are readable
    with DiskSpool(spool_dir, 1 << 20) as spool:
        assert spool.skipped_records == 0
        assert replay_all(spool) == [batch(0, 3), batch(3, 3), batch(100, 1)]


async def test_drain_writes_oldest_first_and_stops_at_a_failure(spool_dir: Path) -> None:
    sink = MemorySink()
    with DiskSpool(spool_dir, 1 << 20) as spool:
        for k in range(3):
            spool.append(batch(k * 2, 2))
        sink.fail_next = 1
        with pytest.raises(SinkUnavailable):
            await spool.drain(sink)
        assert spool.points == 6  # nothing removed without the sink's acceptance
        assert await spool.drain(sink) == 6
        assert sink.batches == [batch(0, 2), batch(2, 2), batch(4, 2)]
        assert spool.empty


def test_append_is_fsynced_before_it_returns(spool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    with DiskSpool(spool_dir, 1 << 20) as spool:
        spool.append(batch(0, 1))
        assert synced, "append returned without fdatasync"
