"""BatchWriter: at-least-once delivery of points to a sink, with batching, retries, a disk spool and backpressure.

    writer = BatchWriter(sink, DiskSpool(dir, max_bytes=1 << 30), on_rejected=quarantine)
    future = writer.add(point)        # the future of the batch the point joined
    await future                      # resolved once the batch is durably stored (sink or spool)

A batch's future resolves only when every point of it is durably stored — accepted by the sink, or fsynced to
the disk spool — or, for a point the store refused, handed to `on_rejected` (which quarantines it durably).
The pipeline acknowledges the MQTT messages of a batch only then.

- Batching: a batch is sealed at `max_batch_points` or when its oldest point has waited `flush_interval_s`.
  At most `max_concurrent_writes` batches are written at once.
- Backpressure: at most `max_pending_points` points are accepted and not yet stored; beyond that `add` raises
  `WriterFull` and `add_wait` waits for space.
- `SinkUnavailable`: retried with exponential backoff and jitter within `retry_budget_s`; then the sink is
  marked down and the batch goes to the spool. While the spool holds anything, new batches go to the spool too
  (so replay keeps order); a background task pings the sink, replays the spool oldest first (a batch is removed
  only once the sink accepted it), and when it is empty direct writes resume. `SinkConfigError` (bad
  credentials, missing database) is handled as "down" at once, without retries.
- `SinkRejected`: the batch is split by `bad_indexes` when the sink names the refused points (InfluxDB's
  partial-write answer; the rest is not written again when the sink says it stored it), else bisected until
  every refused point is isolated: O(bad × log batch) writes. Refused points go to `on_rejected(point,
  server_message)` all together (one quarantine transaction for many, not one per point); the rest is
  written (re-writing points of a partial write is idempotent). `health()` reports a sink that refused more
  than half of the last minute's points (`refusing`).
- `SinkBodyTooLarge` (413): no point is blamed; the chunk is halved and `max_batch_points` lowered for later
  batches. A single point too large for the server's limit means the server is misconfigured: handled as
  "down" (spooled, replayed once the limit is raised).
- `SpoolFull`: the batch is neither lost nor acknowledged: its future stays pending while the writer keeps
  trying the spool (it frees up as the sink drains it); `state == "spool_full"`, `SPOOL_FULL == 1`. Pending
  points then reach `max_pending_points` and backpressure stops the intake.
- `close()` seals and stores everything pending (waiting up to `timeout_s`), tries one last drain of the spool,
  then closes the sink and the spool. Batches that could not be stored in time fail with `WriterClosed`
  (not acknowledged: the broker redelivers them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from collectors.errors import SinkBodyTooLarge, SinkError, SinkRejected, SinkUnavailable, SpoolFull
from collectors.feeds import FEED_SPECS
from collectors.metrics import (
    POINTS_STORED,
    SINK_POINTS_WRITTEN,
    SINK_UP,
    SINK_WRITE_ERRORS,
    SINK_WRITE_SECONDS,
    SPOOL_FULL,
)
from collectors.sinks.base import Sink, SinkConfigError
from collectors.sinks.spool import DiskSpool
from core.model import Point

__all__ = ["BatchWriter", "WriterClosed", "WriterFull"]

log = logging.getLogger(__name__)

OnRejected = Callable[[Point, str], Awaitable[None]]


FEED_MEASUREMENTS = frozenset(spec.measurement for spec in FEED_SPECS.values())


class WriterFull(SinkError):
    """`max_pending_points` points are waiting to be stored: slow down (or use `add_wait`)."""

    def __init__(self, pending: int, limit: int, state: str) -> None:
        super().__init__(f"batch writer full: {pending} points pending (limit {limit}), state {state}")
        self.pending = pending
        self.limit = limit
        self.state = state


class WriterClosed(SinkError):
    """The writer is closed (or closed before this batch could be stored): nothing was acknowledged."""


class _SinkDownError(Exception):
    def __init__(self, cause: SinkError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(slots=True)
class _Batch:
    future: asyncio.Future[None]
    seq: int = 0
    points: list[Point] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class _RefusalWindow:
    """Points written and refused over the last minute, in 10 s buckets."""

    BUCKET_S = 10
    BUCKETS = 6

    def __init__(self) -> None:
        self._buckets: dict[int, list[int]] = {}

    def add(self, written: int = 0, refused: int = 0) -> None:
        key = int(time.monotonic() // self.BUCKET_S)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [0, 0]
            for old in [k for k in self._buckets if k <= key - self.BUCKETS]:
                del self._buckets[old]
        bucket[0] += written
        bucket[1] += refused

    def totals(self) -> tuple[int, int]:
        oldest = int(time.monotonic() // self.BUCKET_S) - self.BUCKETS
        written = sum(b[0] for k, b in self._buckets.items() if k > oldest)
        refused = sum(b[1] for k, b in self._buckets.items() if k > oldest)
        return written, refused


class BatchWriter:
    REFUSING_SHARE = 0.5  # /healthz says the sink is refusing past this share of the last minute's points
    REFUSING_MIN_POINTS = 100

    def __init__(
        self,
        sink: Sink,
        spool: DiskSpool | None,
        *,
        max_batch_points: int = 5000,
        flush_interval_s: float = 0.25,
        max_pending_points: int = 50_000,
        max_concurrent_writes: int = 2,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        retry_budget_s: float = 3.0,
        on_rejected: OnRejected | None = None,
        allow_long_flush_interval: bool = False,
    ) -> None:
        if max_batch_points < 1 or max_pending_points < 1 or max_concurrent_writes < 1:
            raise ValueError("max_batch_points, max_pending_points and max_concurrent_writes must be >= 1")
        if max_batch_points > max_pending_points:
            raise ValueError(f"max_batch_points ({max_batch_points}) > max_pending_points ({max_pending_points})")
        if flush_interval_s <= 0:
            raise ValueError("flush_interval_s must be > 0")
        if flush_interval_s > 1.0 and not allow_long_flush_interval:
            raise ValueError(
                f"flush_interval_s={flush_interval_s}: points would wait more than 1 s before a write; "
                "pass allow_long_flush_interval=True to mean it"
            )
        if retry_initial_s <= 0 or retry_max_s < retry_initial_s or retry_budget_s < 0:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s and retry_budget_s >= 0")
        self.sink = sink
        self.spool = spool
        self.max_batch_points = max_batch_points
        self.flush_interval_s = flush_interval_s
        self.max_pending_points = max_pending_points
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.retry_budget_s = retry_budget_s
        self.on_rejected = on_rejected
        self.rejected_points = 0
        self._refusals = _RefusalWindow()
        self._last_refusal = ""
        self._sem = asyncio.Semaphore(max_concurrent_writes)
        self._spool_lock = asyncio.Lock()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()  # add_wait, FIFO
        self._drain_wake = asyncio.Event()
        self._batch: _Batch | None = None
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._drain_task: asyncio.Task[None] | None = None
        self._closed = False
        self._sink_up = True
        self._spooling = spool is not None and not spool.empty  # replay what a previous run left, first
        self._blocked = 0  # batches waiting because the spool is full
        self._seq = 0
        self._unsettled: set[int] = set()  # sealed batches neither stored nor spooled yet
        self._settled = asyncio.Event()
        SINK_UP.labels(sink.name).set(1)

    # --- state ---
    @property
    def state(self) -> str:
        """"ok", "draining" (sink up, spool replaying), "sink_down", "spool_full" or "closed"."""
        if self._closed:
            return "closed"
        if self._blocked or (self.spool is not None and self.spool.full):
            return "spool_full"
        if not self._sink_up:
            return "sink_down"
        if self._spooling:
            return "draining"
        return "ok"

    @property
    def pending_points(self) -> int:
        return self._pending

    def health(self) -> dict[str, Any]:
        spool = self.spool
        return {
            "state": self.state,
            "sink": self.sink.name,
            "sink_up": self._sink_up,
            "spooling": self._spooling,
            "spool_points": spool.points if spool else 0,
            "spool_bytes": spool.size_bytes if spool else 0,
            "spool_full": bool(self._blocked or (spool is not None and spool.full)),
            "pending_points": self._pending,
            "rejected_points": self.rejected_points,
            "max_batch_points": self.max_batch_points,
            **self.refusing(),
        }

    def refusing(self) -> dict[str, Any]:
        written, refused = self._refusals.totals()
        share = refused / (written + refused) if written + refused else 0.0
        refusing = refused >= self.REFUSING_MIN_POINTS and share > self.REFUSING_SHARE
        report: dict[str, Any] = {"refusing": refusing, "refused_share_1m": round(share, 3)}
        if refusing:
            report["last_refusal"] = self._last_refusal[:300]
        return report

    # --- intake ---
    async def start(self) -> None:
        """Start the background spool drainer (also started by the first `add`)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain_loop(), name="nakhon-spool-drain")
            if self._spooling:
                self._drain_wake.set()

    def add(self, point: Point) -> asyncio.Future[None]:
        """Queue `point`; returns the future of its batch. Raises `WriterFull` / `WriterClosed` instead of growing."""
        if self._closed:
            raise WriterClosed("batch writer is closed")
        if self._pending >= self.max_pending_points:
            raise WriterFull(self._pending, self.max_pending_points, self.state)
        self._ensure_started()
        batch = self._batch
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._batch = _Batch(loop.create_future())
            batch.timer = loop.call_later(self.flush_interval_s, self._flush_due, batch)
        batch.points.append(point)
        self._pending += 1
        future = batch.future
        if len(batch.points) >= self.max_batch_points:
            self._seal()
        return future

    async def add_wait(self, point: Point) -> asyncio.Future[None]:
        """Like `add`, but waits for space when `max_pending_points` are pending (explicit backpressure)."""
        while self._pending >= self.max_pending_points and not self._closed:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return self.add(point)

    def _wake_waiters(self) -> None:
        """Wake as many add_wait callers as there is room for (all of them once closed), oldest first."""
        room = self.max_pending_points - self._pending
        while self._waiters and (room > 0 or self._closed):
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1

    def flush(self) -> asyncio.Future[None] | None:
        """Seal the open batch now; returns its future (None when nothing is open)."""
        batch = self._batch
        if batch is None:
            return None
        self._seal()
        return batch.future

    def _flush_due(self, batch: _Batch) -> None:
        if self._batch is batch:
            self._seal()

    def _seal(self) -> None:
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        if batch.timer is not None:
            batch.timer.cancel()
        self._seq += 1
        batch.seq = self._seq
        self._unsettled.add(batch.seq)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        try:
            async with self._sem:
                await self._store(batch.points, batch.seq)
            if not batch.future.done():
                batch.future.set_result(None)
        except asyncio.CancelledError:
            if not batch.future.done():
                batch.future.set_exception(
                    WriterClosed(f"writer closed before a batch of {len(batch.points)} points was stored")
                )
            raise
        except Exception as exc:
            log.exception("batch of %d points failed (not acknowledged)", len(batch.points))
            if not batch.future.done():
                batch.future.set_exception(exc)
        finally:
            self._settle(batch.seq)
            self._pending -= len(batch.points)
            self._wake_waiters()

    def _settle(self, seq: int) -> None:
        if seq in self._unsettled:
            self._unsettled.discard(seq)
            self._settled.set()

    # --- storing one batch ---
    async def _store(self, points: list[Point], seq: int) -> None:
        chunks: deque[list[Point]] = deque([points])
        while chunks:
            if self._spooling:
                # spool in batch order: earlier batches still in flight settle first (they stop retrying now)
                while min(self._unsettled, default=seq) < seq:
                    self._settled.clear()
                    await self._settled.wait()
                rest = [p for chunk in chunks for p in chunk]
                if await self._to_spool(rest):
                    self._settle(seq)
                    return
                continue  # the spool was drained meanwhile: write directly
            try:
                await self._deliver(chunks, retry=True)
            except _SinkDownError as down:
                self._mark_down(down.cause)

    async def _deliver(self, chunks: deque[list[Point]], *, retry: bool) -> None:
        """Write `chunks` in order, isolating refused points; `_SinkDownError` leaves the unsent ones in `chunks`."""
        refused: list[tuple[Point, str]] = []
        try:
            await self._deliver_chunks(chunks, refused, retry=retry)
        finally:
            # Quarantined together, whatever happened to the rest: one durable write for many refused points.
            await self._reject_all(refused)

    async def _deliver_chunks(self, chunks: deque[list[Point]], refused: list[tuple[Point, str]], *,
                              retry: bool) -> None:
        while chunks:
            chunk = chunks[0]
            try:
                await self._write(chunk, retry=retry)
            except SinkConfigError as exc:
                raise _SinkDownError(exc) from None
            except SinkBodyTooLarge as exc:
                if len(chunk) == 1:
                    raise _SinkDownError(exc) from None  # the server's limit is below one point: fix the server
                chunks.popleft()
                mid = len(chunk) // 2
                chunks.appendleft(chunk[mid:])
                chunks.appendleft(chunk[:mid])
                if mid < self.max_batch_points:
                    log.warning("sink %s: request body too large for %d points, batches now %d points: %s",
                                self.sink.name, len(chunk), mid, exc)
                    self.max_batch_points = max(1, mid)
                continue
            except SinkRejected as exc:
                chunks.popleft()
                message = str(exc)
                self._last_refusal = message
                if len(chunk) == 1:
                    refused.append((chunk[0], message))
                elif exc.bad_indexes and all(0 <= i < len(chunk) for i in exc.bad_indexes):
                    bad = set(exc.bad_indexes)
                    refused.extend((chunk[i], message) for i in sorted(bad))
                    good = [p for i, p in enumerate(chunk) if i not in bad]
                    if good and exc.rest_stored:
                        self._stored(good, retry=retry)
                    elif good:
                        chunks.appendleft(good)  # re-written: idempotent if the sink already stored them
                else:
                    mid = len(chunk) // 2
                    chunks.appendleft(chunk[mid:])
                    chunks.appendleft(chunk[:mid])
                continue
            except SinkUnavailable as exc:
                raise _SinkDownError(exc) from None
            chunks.popleft()

    async def _write(self, points: list[Point], *, retry: bool) -> None:
        """One write, retried on `SinkUnavailable` within the budget (unless the sink is already known down)."""
        name = self.sink.name
        delay = self.retry_initial_s
        deadline = time.monotonic() + self.retry_budget_s
        while True:
            started = time.perf_counter()
            try:
                await self.sink.write(points)
            except SinkConfigError:
                SINK_WRITE_ERRORS.labels(name, "config").inc()
                raise
            except SinkRejected:
                SINK_WRITE_ERRORS.labels(name, "rejected").inc()
                raise
            except SinkUnavailable as exc:
                SINK_WRITE_ERRORS.labels(name, "unavailable").inc()
                if not retry or self._spooling or time.monotonic() + delay > deadline:
                    raise
                log.debug("sink %s unavailable, retrying in %.2fs: %s", name, delay, exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.retry_max_s)
                continue
            finally:
                SINK_WRITE_SECONDS.labels(name).observe(time.perf_counter() - started)
            self._stored(points, retry=retry)
            return

    def _stored(self, points: list[Point], *, retry: bool) -> None:
        name = self.sink.name
        SINK_POINTS_WRITTEN.labels(name).inc(len(points))
        self._refusals.add(written=len(points))
        if not self._sink_up:
            self._sink_up = True
            SINK_UP.labels(name).set(1)
        if retry:  # a direct write (not a replay, which was counted when spooled)
            self._count_stored(points)

    async def _reject_all(self, refused: list[tuple[Point, str]]) -> None:
        if not refused:
            return
        self.rejected_points += len(refused)
        self._refusals.add(refused=len(refused))
        if self.on_rejected is not None:
            on_rejected = self.on_rejected
            await asyncio.gather(*(on_rejected(point, message) for point, message in refused))
        else:
            log.warning("sink %s refused %d points (no on_rejected handler): %s", self.sink.name, len(refused),
                        refused[0][1])

    def _mark_down(self, cause: SinkError) -> None:
        if self._sink_up or not self._spooling:
            log.warning("sink %s is down, spooling to disk: %s", self.sink.name, cause)
        self._sink_up = False
        self._spooling = True
        SINK_UP.labels(self.sink.name).set(0)
        self._drain_wake.set()

    async def _to_spool(self, points: list[Point]) -> bool:
        """Append to the spool (fsynced); True once stored, False if direct writes resumed meanwhile."""
        delay = self.retry_initial_s
        blocked = False
        try:
            while True:
                async with self._spool_lock:
                    if not self._spooling:
                        return False
                    if self.spool is not None:
                        try:
                            await asyncio.to_thread(self.spool.append, points)
                        except SpoolFull as exc:
                            if not blocked:
                                log.error("%s; %d points wait (not acknowledged)", exc, len(points))
                        else:
                            self._count_stored(points)
                            self._drain_wake.set()
                            return True
                if not blocked:
                    blocked = True
                    self._blocked += 1
                    SPOOL_FULL.set(1)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.retry_max_s)
        finally:
            if blocked:
                self._blocked -= 1
                if not self._blocked and not (self.spool is not None and self.spool.full):
                    SPOOL_FULL.set(0)

    @staticmethod
    def _count_stored(points: list[Point]) -> None:
        # Readings count under their feed; other points (the rules engine's `alerts`) under their measurement.
        labels = collections.Counter(
            p.tags.get("feed", "") if p.measurement in FEED_MEASUREMENTS else p.measurement for p in points
        )
        for label, n in labels.items():
            POINTS_STORED.labels(label).inc(n)

    # --- replay ---
    async def _drain_loop(self) -> None:
        delay = self.retry_initial_s
        while True:
            if not self._spooling:
                self._drain_wake.clear()
                await self._drain_wake.wait()
                continue
            if await self._drain_step():
                delay = self.retry_initial_s
            else:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.retry_max_s)

    async def _drain_step(self) -> bool:
        """One step of replay; False when the sink is (still) down."""
        if not self._sink_up and not await self.sink.ping():
            return False
        batch = await asyncio.to_thread(self.spool.peek) if self.spool is not None else None
        if batch is None:
            async with self._spool_lock:
                if self.spool is None or self.spool.empty:
                    if not self._sink_up:  # we got here because the ping succeeded
                        self._sink_up = True
                        SINK_UP.labels(self.sink.name).set(1)
                    if self._spooling:
                        self._spooling = False
                        log.info("sink %s: spool replayed, direct writes resume", self.sink.name)
            return True
        try:
            await self._deliver(deque([batch.points]), retry=False)
        except _SinkDownError as down:
            self._mark_down(down.cause)
            return False
        assert self.spool is not None
        await asyncio.to_thread(self.spool.commit, batch)
        return True

    # --- shutdown ---
    async def close(self, timeout_s: float = 30.0) -> None:
        """Store everything pending (up to `timeout_s`), try one last drain, then close the sink and the spool."""
        if self._closed:
            return
        self._seal()
        self._closed = True
        self._wake_waiters()
        deadline = time.monotonic() + timeout_s
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout_s)
            for task in late:
                task.cancel()
            if late:
                log.error("close: %d batches could not be stored within %.1fs (not acknowledged)", len(late), timeout_s)
                await asyncio.gather(*late, return_exceptions=True)
        if self._drain_task is not None:
            self._drain_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain_task
        if self.spool is not None and not self.spool.empty:
            remaining = deadline - time.monotonic()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._final_drain(), remaining)
        await self.sink.close()
        if self.spool is not None:
            self.spool.close()

    async def _final_drain(self) -> None:
        while self.spool is not None and not self.spool.empty:
            if not await self._drain_step():
                return

    async def __aenter__(self) -> BatchWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
