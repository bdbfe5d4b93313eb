"""SQLiteSink: the embedded store of the zero-setup demo, with InfluxDB's write semantics.

- One row per (measurement, series key, time_ns); writing the same key again merges the fields (later values
  win), as InfluxDB does, so re-writes are idempotent.
- A field keeps the type of its first write in a measurement; a point of another type is refused (the rest of
  the batch is stored — InfluxDB's "partial write"), and `SinkRejected.bad_indexes` names the refused points.
- WAL journal with `synchronous=FULL`: a batch is durable when `write` returns. Writes run in a worker thread
  (`asyncio.to_thread`) so the event loop is never blocked; one connection behind a lock.
- Fields and tags are stored as JSON (a float stays a float: `12.0`).

Read API for the demo and tests: `count`, `latest`, `query` (synchronous, cheap; call via `asyncio.to_thread`
from async code when the table is large).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from collectors.errors import SinkRejected, SinkUnavailable
from collectors.sinks.base import field_type, point_problem, series_key
from core.model import FieldValue, Point

__all__ = ["SQLiteSink"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    series      TEXT NOT NULL,
    time_ns     INTEGER NOT NULL,
    device_id   TEXT,
    tags        TEXT NOT NULL,
    fields      TEXT NOT NULL,
    PRIMARY KEY (measurement, series, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS points_by_device ON points (measurement, device_id, time_ns);
CREATE INDEX IF NOT EXISTS points_by_time ON points (measurement, time_ns);
CREATE TABLE IF NOT EXISTS field_types (
    measurement TEXT NOT NULL,
    field       TEXT NOT NULL,
    type        TEXT NOT NULL,
    PRIMARY KEY (measurement, field)
) WITHOUT ROWID;
"""

_UPSERT = (
    "INSERT INTO points (measurement, series, time_ns, device_id, tags, fields) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (measurement, series, time_ns) DO UPDATE SET fields = json_patch(points.fields, excluded.fields)"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class SQLiteSink:
    def __init__(self, path: str | os.PathLike[str], *, name: str = "sqlite") -> None:
        self.name = name
        self.path = str(path)
        self._lock = threading.Lock()
        self._closed = False
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)
        self._types: dict[tuple[str, str], str] = {
            (m, f): t for m, f, t in self._conn.execute("SELECT measurement, field, type FROM field_types")
        }

    # --- Sink ---
    async def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        await asyncio.to_thread(self._write_sync, list(points))

    def _write_sync(self, points: list[Point]) -> None:
        bad: list[int] = []
        first_reason = ""
        rows: list[tuple[str, str, int, str | None, str, str]] = []
        with self._lock:
            if self._closed:
                raise SinkUnavailable(f"{self.name} ({self.path}): closed")
            new_types: dict[tuple[str, str], str] = {}
            for i, p in enumerate(points):
                reason = point_problem(p) or self._type_conflict(p, new_types)
                if reason:
                    bad.append(i)
                    first_reason = first_reason or reason
                    continue
                for k, v in p.fields.items():
                    key = (p.measurement, k)
                    if key not in self._types and key not in new_types:
                        new_types[key] = field_type(v)
                tags = {k: v for k, v in p.tags.items() if v}
                rows.append(
                    (p.measurement, series_key(tags), p.time_ns, tags.get("device_id"), _dumps(tags), _dumps(p.fields))
                )
            if rows:
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        self._conn.executemany(_UPSERT, rows)
                        self._conn.executemany(
                            "INSERT OR IGNORE INTO field_types (measurement, field, type) VALUES (?, ?, ?)",
                            [(m, f, t) for (m, f), t in new_types.items()],
                        )
                        self._conn.execute("COMMIT")
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                except sqlite3.Error as exc:
                    raise SinkUnavailable(f"{self.name} ({self.path}): {type(exc).__name__}: {exc}") from exc
                self._types.update(new_types)
        if bad:
            raise SinkRejected(
                f"{self.name}: partial write: {first_reason} dropped={len(bad)}", bad_indexes=bad
            )

    def _type_conflict(self, p: Point, new_types: dict[tuple[str, str], str]) -> str | None:
        for k, v in p.fields.items():
            known = self._types.get((p.measurement, k)) or new_types.get((p.measurement, k))
            if known is not None and known != field_type(v):
                return (
                    f"field type conflict: input field {k!r} on measurement {p.measurement!r} "
                    f"is type {field_type(v)}, already exists as type {known}"
                )
        return None

    async def ping(self) -> bool:
        def _ping() -> bool:
            with self._lock:
                if self._closed:
                    return False
                try:
                    self._conn.execute("SELECT 1").fetchone()
                except sqlite3.Error:
                    return False
                return True

        return await asyncio.to_thread(_ping)

    async def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # --- read API ---
    def _rows(self, sql: str, params: Sequence[Any]) -> list[Point]:
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [Point(m, json.loads(tags), self._fields(fields), t) for m, tags, fields, t in rows]

    @staticmethod
    def _fields(text: str) -> dict[str, FieldValue]:
        out: dict[str, FieldValue] = json.loads(text)
        return out

    def count(self, measurement: str, device_id: str | None = None) -> int:
        sql = "SELECT count(*) FROM points WHERE measurement = ?"
        params: list[Any] = [measurement]
        if device_id is not None:
            sql += " AND device_id = ?"
            params.append(device_id)
        with self._lock:
            return int(self._conn.execute(sql, params).fetchone()[0])

    def latest(self, measurement: str, device_id: str | None = None, limit: int = 1) -> list[Point]:
        """The newest `limit` points (newest first), of one device or of the whole measurement."""
        sql = "SELECT measurement, tags, fields, time_ns FROM points WHERE measurement = ?"
        params: list[Any] = [measurement]
        if device_id is not None:
            sql += " AND device_id = ?"
            params.append(device_id)
        sql += " ORDER BY time_ns DESC LIMIT ?"
        params.append(limit)
        return self._rows(sql, params)

    def query(
        self,
        measurement: str,
        since_ns: int | None = None,
        until_ns: int | None = None,
        tags: dict[str, str] | None = None,
    ) -> list[Point]:
        """Points of `measurement` with since_ns <= time < until_ns whose tags include `tags`, oldest first."""
        sql = "SELECT measurement, tags, fields, time_ns FROM points WHERE measurement = ?"
        params: list[Any] = [measurement]
        if since_ns is not None:
            sql += " AND time_ns >= ?"
            params.append(since_ns)
        if until_ns is not None:
            sql += " AND time_ns < ?"
            params.append(until_ns)
        want = dict(tags or {})
        if "device_id" in want:
            sql += " AND device_id = ?"
            params.append(want.pop("device_id"))
        sql += " ORDER BY time_ns, series"
        points = self._rows(sql, params)
        if want:
            points = [p for p in points if all(p.tags.get(k) == v for k, v in want.items())]
        return points
