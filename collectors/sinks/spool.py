"""DiskSpool: the durable, bounded, in-order buffer that holds batches while the sink is down.

On disk (one directory, owned by one process):

    seg-000000000001.spool   append-only segment files of records
    seg-000000000002.spool
    ack                      how far replay got: (segment, offset) + CRC, rewritten and fsynced on commit

    record = header (magic "NKS1", payload length u32, point count u32, CRC32 u32) + payload
    payload = JSON array of [measurement, tags, fields, time_ns] (JSON keeps 12.0 a float, ints ints, bools bools)

- `append(points)` writes one record and fsyncs it (and the directory when it starts a new segment) before it
  returns: a batch is durable when `append` returns. It raises `SpoolFull` (nothing written) when the record
  would take the spool over `max_bytes` — or when the disk itself fails (ENOSPC, EIO).
- `peek()` returns the oldest batch not yet committed; `commit(batch)` marks it replayed (fsynced `ack`) and
  deletes segments that are fully replayed. `drain(sink)` does peek → sink.write → commit until empty.
- Crash safety: a new `DiskSpool` on the same directory scans the segments; a torn or corrupt record (short
  header, short payload, bad magic or CRC — what a crash during `append` leaves) ends its segment: the file is
  truncated there and the records before it are replayed. Replay is at-least-once: a batch written to the sink
  but not yet committed when the process died is written again (idempotent in the sinks).
- Thread-safe (one lock): the batch writer calls it through `asyncio.to_thread` so fsync never blocks the loop.

`size_bytes` is what the segment files use on disk (a partly replayed segment counts until it is deleted).
Gauges: `SPOOL_DEPTH_POINTS`, `SPOOL_BYTES`, `SPOOL_FULL` (one spool per process is assumed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collectors.errors import SpoolFull
from collectors.metrics import SPOOL_BYTES, SPOOL_DEPTH_POINTS, SPOOL_FULL
from core.model import Point

if TYPE_CHECKING:
    from collectors.sinks.base import Sink

__all__ = ["DiskSpool", "SpoolBatch"]

log = logging.getLogger(__name__)

_MAGIC = b"NKS1"
_HEADER = struct.Struct("<4sIII")  # magic, payload length, point count, crc32
_ACK = struct.Struct("<QQI")  # segment, offset, crc32 of the first 16 bytes
_PREFIX = "seg-"
_SUFFIX = ".spool"


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """One spooled batch, as returned by `peek()`; pass it back to `commit()` once the sink accepted it."""

    points: list[Point]
    segment: int
    offset: int
    size: int


@dataclass(slots=True)
class _Record:
    segment: int
    offset: int
    size: int
    n_points: int


def _encode(points: Sequence[Point]) -> bytes:
    rows = [[p.measurement, p.tags, p.fields, p.time_ns] for p in points]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def _decode(payload: bytes) -> list[Point]:
    return [Point(m, tags, fields, t) for m, tags, fields, t in json.loads(payload)]


def _crc(payload: bytes, length: int, n_points: int) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<II", length, n_points)))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskSpool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, *, segment_bytes: int | None = None) -> None:
        if max_bytes <= _HEADER.size:
            raise ValueError(f"max_bytes must be larger than {_HEADER.size}, got {max_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(max_bytes // 8, 32 * 1024 * 1024))
        self.skipped_records = 0  # torn/corrupt records found when opening (each ends its segment)
        self.full = False
        self._lock = threading.Lock()
        self._records: deque[_Record] = deque()
        self._seg_sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._points = 0
        self._write_seg: int | None = None
        self._write_fd: int | None = None
        self._next_seg = 1
        self._head_cache: tuple[int, int, list[Point]] | None = None
        self._closed = False
        ack_path = self.directory / "ack"
        self._ack_fd = os.open(ack_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._recover()
        self._publish()

    # --- state ---
    @property
    def points(self) -> int:
        return self._points

    @property
    def size_bytes(self) -> int:
        return sum(self._seg_sizes.values())

    @property
    def batches(self) -> int:
        return len(self._records)

    @property
    def empty(self) -> bool:
        return not self._records

    def depth(self) -> tuple[int, int]:
        """(points waiting, bytes on disk)."""
        return self._points, self.size_bytes

    def _publish(self) -> None:
        SPOOL_DEPTH_POINTS.set(self._points)
        SPOOL_BYTES.set(self.size_bytes)
        SPOOL_FULL.set(1 if self.full else 0)

    # --- recovery ---
    def _seg_path(self, seg: int) -> Path:
        return self.directory / f"{_PREFIX}{seg:012d}{_SUFFIX}"

    def _read_ack(self) -> tuple[int, int]:
        raw = os.pread(self._ack_fd, _ACK.size, 0)
        if len(raw) != _ACK.size:
            return 0, 0
        seg, off, crc = _ACK.unpack(raw)
        if zlib.crc32(raw[:16]) != crc:
            log.warning("disk spool %s: ack file is corrupt; replaying every segment from its start", self.directory)
            return 0, 0
        return seg, off

    def _write_ack(self, seg: int, off: int) -> None:
        head = struct.pack("<QQ", seg, off)
        os.pwrite(self._ack_fd, head + struct.pack("<I", zlib.crc32(head)), 0)
        os.fdatasync(self._ack_fd)

    def _recover(self) -> None:
        ack_seg, ack_off = self._read_ack()
        self._next_seg = ack_seg + 1  # never reuse a number the ack may name (it would read as replayed)
        segs = sorted(
            int(p.name[len(_PREFIX) : -len(_SUFFIX)])
            for p in self.directory.glob(f"{_PREFIX}*{_SUFFIX}")
            if p.name[len(_PREFIX) : -len(_SUFFIX)].isdigit()
        )
        changed = False
        for seg in segs:
            path = self._seg_path(seg)
            self._next_seg = max(self._next_seg, seg + 1)
            if seg < ack_seg:
                path.unlink()
                changed = True
                continue
            data = path.read_bytes()
            off, records = 0, []
            while off < len(data):
                rec = self._parse(data, off, seg)
                if rec is None:
                    self.skipped_records += 1
                    log.warning(
                        "disk spool %s: torn or corrupt record in %s at byte %d; truncating the segment there",
                        self.directory, path.name, off,
                    )
                    with open(path, "r+b") as f:
                        f.truncate(off)
                        os.fsync(f.fileno())
                    break
                records.append(rec)
                off += rec.size
            live = [r for r in records if not (seg == ack_seg and r.offset < ack_off)]
            if not live:
                path.unlink()
                changed = True
                continue
            self._seg_sizes[seg] = off
            self._records.extend(live)
            self._points += sum(r.n_points for r in live)
        if changed:
            _fsync_dir(self.directory)

    @staticmethod
    def _parse(data: bytes, off: int, seg: int) -> _Record | None:
        if off + _HEADER.size > len(data):
            return None
        magic, length, n_points, crc = _HEADER.unpack_from(data, off)
        end = off + _HEADER.size + length
        if magic != _MAGIC or end > len(data):
            return None
        if _crc(data[off + _HEADER.size : end], length, n_points) != crc:
            return None
        return _Record(seg, off, end - off, n_points)

    # --- append ---
    def append(self, points: Sequence[Point]) -> None:
        """Durably append one batch (fsynced when this returns). Raises `SpoolFull` when it does not fit."""
        if not points:
            return
        payload = _encode(points)
        header = _HEADER.pack(_MAGIC, len(payload), len(points), _crc(payload, len(payload), len(points)))
        record = header + payload
        with self._lock:
            if self._closed:
                raise SpoolFull(f"disk spool {self.directory} is closed")
            used = self.size_bytes
            if used + len(record) > self.max_bytes:
                self.full = True
                self._publish()
                raise SpoolFull(
                    f"disk spool {self.directory} is full: {used} of {self.max_bytes} bytes used by "
                    f"{self._points} points; a batch of {len(points)} points ({len(record)} bytes) does not fit"
                )
            if self._write_fd is None or (
                self._write_seg is not None
                and self._seg_sizes.get(self._write_seg, 0) > 0
                and self._seg_sizes[self._write_seg] + len(record) > self.segment_bytes
            ):
                self._rotate()
            assert self._write_fd is not None and self._write_seg is not None
            seg, fd = self._write_seg, self._write_fd
            offset = self._seg_sizes[seg]
            try:
                view = memoryview(record)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fdatasync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, offset)
                self.full = True
                self._publish()
                raise SpoolFull(
                    f"disk spool {self.directory}: writing {self._seg_path(seg).name} failed: "
                    f"{exc.strerror or exc} (errno {exc.errno})"
                ) from exc
            self._seg_sizes[seg] = offset + len(record)
            self._records.append(_Record(seg, offset, len(record), len(points)))
            self._points += len(points)
            self.full = False
            self._publish()

    def _rotate(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            if self._write_seg is not None and not any(r.segment == self._write_seg for r in self._records):
                self._remove_segment(self._write_seg)
        seg = self._next_seg
        self._next_seg += 1
        self._write_fd = os.open(self._seg_path(seg), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._write_seg = seg
        self._seg_sizes[seg] = 0
        _fsync_dir(self.directory)

    def _remove_segment(self, seg: int) -> None:
        self._seg_sizes.pop(seg, None)
        with contextlib.suppress(FileNotFoundError):
            self._seg_path(seg).unlink()

    # --- replay ---
    def peek(self) -> SpoolBatch | None:
        """The oldest batch not yet committed, or None when the spool is empty."""
        with self._lock:
            if not self._records:
                return None
            rec = self._records[0]
            cached = self._head_cache
            if cached is not None and cached[0] == rec.segment and cached[1] == rec.offset:
                points = cached[2]
            else:
                with open(self._seg_path(rec.segment), "rb") as f:
                    f.seek(rec.offset + _HEADER.size)
                    points = _decode(f.read(rec.size - _HEADER.size))
                self._head_cache = (rec.segment, rec.offset, points)
            return SpoolBatch(list(points), rec.segment, rec.offset, rec.size)

    def commit(self, batch: SpoolBatch) -> None:
        """Mark `batch` (the current head) replayed: fsync the ack, delete fully replayed segments."""
        with self._lock:
            if not self._records:
                raise ValueError("commit on an empty spool")
            rec = self._records[0]
            if (rec.segment, rec.offset) != (batch.segment, batch.offset):
                raise ValueError(
                    f"commit of segment {batch.segment} offset {batch.offset} but the head is "
                    f"segment {rec.segment} offset {rec.offset}"
                )
            self._write_ack(rec.segment, rec.offset + rec.size)
            self._records.popleft()
            self._points -= rec.n_points
            self._head_cache = None
            removed = False
            if not self._records:
                if self._write_fd is not None:
                    os.close(self._write_fd)
                    self._write_fd = None
                    self._write_seg = None
                for seg in list(self._seg_sizes):
                    self._remove_segment(seg)
                removed = True
            elif self._records[0].segment != rec.segment and rec.segment != self._write_seg:
                self._remove_segment(rec.segment)
                removed = True
            if removed:
                _fsync_dir(self.directory)
            self.full = False
            self._publish()

    async def drain(self, sink: Sink) -> int:
        """Write every spooled batch to `sink`, oldest first, committing each once accepted; returns points written.

        Stops at the first failure, leaving that batch at the head (the sink's error propagates).
        """
        written = 0
        while True:
            batch = await asyncio.to_thread(self.peek)
            if batch is None:
                return written
            await sink.write(batch.points)
            await asyncio.to_thread(self.commit, batch)
            written += len(batch.points)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
            os.close(self._ack_fd)

    def __repr__(self) -> str:
        return f"DiskSpool({str(self.directory)!r}, points={self._points}, bytes={self.size_bytes})"

    def __enter__(self) -> DiskSpool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
