"""Quarantine: every rejected message is kept, durably, with its topic, raw payload, reason and time.

Rejections are batched into one SQLite transaction (synchronous=FULL) like the sink's writes, so a burst of
bad messages costs one fsync per batch; `add()` returns the future the MQTT ack waits on.

Bounded: at most `max_rows` rows and `max_bytes` of payload, detail and topic, none older than `max_age_s`;
past a limit the oldest rows are dropped first (in the same transaction as the insert), counted in
`nakhon_quarantine_dropped_total` and in the file itself (`dropped()`), so `quarantine list` can say so.
SQLite reuses the freed pages: the file stays near `max_bytes` plus its indexes (~+40 %).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from collectors.metrics import MESSAGES_QUARANTINED

MAX_PAYLOAD_BYTES = 4096

SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ns INTEGER NOT NULL,
    topic TEXT NOT NULL,
    device_id TEXT,
    feed TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_device ON quarantine (device_id, received_ns);
CREATE INDEX IF NOT EXISTS quarantine_reason ON quarantine (reason, received_ns);
CREATE TABLE IF NOT EXISTS quarantine_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

QUARANTINE_DROPPED = Counter(
    "nakhon_quarantine_dropped", "Quarantined messages dropped, oldest first, to keep the quarantine bounded",
    ["cause"],
)
_ROW_BYTES = "length(payload) + length(detail) + length(topic)"


@dataclass(slots=True, frozen=True)
class QuarantinedMessage:
    received_ns: int
    topic: str
    device_id: str | None
    feed: str | None
    reason: str
    detail: str
    payload: bytes
    payload_size: int
    id: int | None = None


class QuarantineStore:
    """A durable, bounded-batch store of rejected messages (SQLite file in the data dir)."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval_s: float = 0.05,
        max_batch: int = 1000,
        max_rows: int = 1_000_000,
        max_bytes: int = 512 * 1024 * 1024,
        max_age_s: float = 90 * 24 * 3600,
    ) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._rows, self._bytes = self._db.execute(
            f"SELECT count(*), coalesce(sum({_ROW_BYTES}), 0) FROM quarantine"
        ).fetchone()
        self._next_age_check = 0.0
        self._batch: list[QuarantinedMessage] = []
        self._batch_future: asyncio.Future[None] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    def add(
        self,
        *,
        topic: str,
        payload: bytes,
        reason: str,
        detail: str,
        received_ns: int | None = None,
        device_id: str | None = None,
        feed: str | None = None,
    ) -> asyncio.Future[None]:
        """Queue a rejected message; the returned future resolves once it is on disk."""
        message = QuarantinedMessage(
            received_ns=received_ns or time.time_ns(),
            topic=topic,
            device_id=device_id,
            feed=feed,
            reason=reason,
            detail=detail[:1000],
            payload=payload[:MAX_PAYLOAD_BYTES],
            payload_size=len(payload),
        )
        MESSAGES_QUARANTINED.labels(feed or "unknown", reason).inc()
        loop = asyncio.get_running_loop()
        if self._batch_future is None:
            self._batch_future = loop.create_future()
            self._flush_handle = loop.call_later(self._flush_interval_s, self._start_flush)
        future = self._batch_future
        self._batch.append(message)
        if len(self._batch) >= self._max_batch:
            self._start_flush()
        return future

    def _start_flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, future = self._batch, self._batch_future
        self._batch, self._batch_future = [], None
        if not batch or future is None:
            return
        task = asyncio.get_running_loop().create_task(self._flush(batch, future), name="quarantine-flush")
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[QuarantinedMessage], future: asyncio.Future[None]) -> None:
        delay = 0.1
        while True:
            try:
                await asyncio.to_thread(self._insert, batch)
                break
            except sqlite3.Error:
                # Disk trouble: keep the messages unacknowledged and try again rather than lose them.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if not future.done():
            future.set_result(None)

    def _insert(self, batch: list[QuarantinedMessage]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO quarantine (received_ns, topic, device_id, feed, reason, detail, payload, payload_size)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (m.received_ns, m.topic, m.device_id, m.feed, m.reason, m.detail, m.payload, m.payload_size)
                    for m in batch
                ],
            )
            self._rows += len(batch)
            self._bytes += sum(len(m.payload) + len(m.detail) + len(m.topic) for m in batch)
            self._enforce_bounds()
            self._db.execute("COMMIT")

    def _enforce_bounds(self) -> None:
        """Drop the oldest rows past a limit (inside the caller's transaction)."""
        now = time.monotonic()
        if now >= self._next_age_check:
            self._next_age_check = now + 60.0
            cutoff = time.time_ns() - int(self.max_age_s * 1e9)
            self._drop("age", "WHERE received_ns < ?", (cutoff,))
        if self._rows > self.max_rows:
            excess = self._rows - self.max_rows + max(1, self.max_rows // 100)  # 1 % slack: not every batch
            self._drop("rows", "WHERE id IN (SELECT id FROM quarantine ORDER BY id LIMIT ?)", (excess,))
        if self._bytes > self.max_bytes:
            target = self._bytes - int(self.max_bytes * 0.99)
            # the oldest rows whose running size covers the excess
            row = self._db.execute(
                f"SELECT id FROM (SELECT id, sum({_ROW_BYTES}) OVER (ORDER BY id) AS run FROM quarantine) "
                "WHERE run >= ? ORDER BY id LIMIT 1", (target,),
            ).fetchone()
            if row is not None:
                self._drop("bytes", "WHERE id <= ?", (int(row[0]),))

    def _drop(self, cause: str, where: str, params: tuple[int, ...]) -> None:
        rows, size = self._db.execute(
            f"SELECT count(*), coalesce(sum({_ROW_BYTES}), 0) FROM quarantine {where}", params
        ).fetchone()
        if not rows:
            return
        self._db.execute(f"DELETE FROM quarantine {where}", params)
        self._db.execute(
            "INSERT INTO quarantine_meta (key, value) VALUES ('dropped', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value", (rows,),
        )
        self._rows -= rows
        self._bytes -= size
        QUARANTINE_DROPPED.labels(cause).inc(rows)

    def newest_id(self) -> int:
        with self._lock:
            (value,) = self._db.execute("SELECT coalesce(max(id), 0) FROM quarantine").fetchone()
        return int(value)

    def dropped(self) -> int:
        """Rows dropped to keep the store bounded, over the file's lifetime."""
        with self._lock:
            row = self._db.execute("SELECT value FROM quarantine_meta WHERE key = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    @property
    def size(self) -> tuple[int, int]:
        """(rows, bytes of payload + detail + topic) kept."""
        return self._rows, self._bytes

    def remove(self, ids: list[int]) -> None:
        """Delete rows (replayed ones)."""
        with self._lock:
            self._db.execute("BEGIN")
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows, size = self._db.execute(
                    f"SELECT count(*), coalesce(sum({_ROW_BYTES}), 0) FROM quarantine WHERE id IN ({marks})", chunk
                ).fetchone()
                self._db.execute(f"DELETE FROM quarantine WHERE id IN ({marks})", chunk)
                self._rows -= rows
                self._bytes -= size
            self._db.execute("COMMIT")

    async def flush(self) -> None:
        self._start_flush()
        while self._flushing:
            await asyncio.gather(*list(self._flushing))

    async def close(self) -> None:
        await self.flush()
        with self._lock:
            self._db.close()

    def list(
        self, *, device_id: str | None = None, reason: str | None = None, limit: int = 100,
        since_ns: int | None = None, after_id: int | None = None,
    ) -> list[QuarantinedMessage]:
        """Newest first; with `after_id`, oldest first from that id on (for paging through a replay)."""
        query = "SELECT id, received_ns, topic, device_id, feed, reason, detail, payload, payload_size FROM quarantine"
        clauses: list[str] = []
        params: list[object] = []
        if since_ns is not None:
            clauses.append("received_ns >= ?")
            params.append(since_ns)
        if after_id is not None:
            clauses.append("id > ?")
            params.append(after_id)
        if device_id:
            clauses.append("device_id = ?")
            params.append(device_id)
        if reason:
            clauses.append("reason = ?")
            params.append(reason)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY id ASC LIMIT ?" if after_id is not None else " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, [*params, limit]).fetchall()
        return [
            QuarantinedMessage(
                id=row[0], received_ns=row[1], topic=row[2], device_id=row[3], feed=row[4], reason=row[5],
                detail=row[6], payload=bytes(row[7]), payload_size=row[8],
            )
            for row in rows
        ]

    def counts(self) -> Iterator[tuple[str, str, int]]:
        """(feed, reason, count) over everything kept."""
        with self._lock:
            rows = self._db.execute(
                "SELECT coalesce(feed, 'unknown'), reason, count(*) FROM quarantine GROUP BY 1, 2 ORDER BY 3 DESC"
            ).fetchall()
        yield from ((str(f), str(r), int(n)) for f, r, n in rows)
