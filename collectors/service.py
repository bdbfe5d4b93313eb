"""The collector service: transport + pipeline + writer + quarantine, run as one unit with named tasks.

`async with CollectorService(...) as service: await stop.wait()` — leaving the block flushes everything
accepted and acknowledges it before disconnecting (SIGTERM-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from collectors.diagnostics import DiagnosticsBuffer
from collectors.directory import DeviceDirectory
from collectors.domain.base import Enricher
from collectors.metrics import MQTT_TOO_LARGE
from collectors.pipeline import FieldMapperLike, Input, Pipeline, ReadingConsumer
from collectors.quarantine import QuarantineStore
from collectors.sinks.base import Sink
from collectors.sinks.spool import DiskSpool
from collectors.sinks.writer import BatchWriter
from collectors.timecheck import TimePolicy
from collectors.transport.mqtt import MqttEndpoint, MqttSubscriber
from core.model import Point, RecentMessage

log = logging.getLogger(__name__)

PACKET_HEADROOM_BYTES = 64 * 1024  # topic and properties on top of the payload limit

DiagnosticsFlush = Callable[[dict[str, list[RecentMessage]]], None]


class CollectorService:
    def __init__(
        self,
        *,
        endpoint: MqttEndpoint,
        client_id: str,
        inputs: list[Input],
        subscriptions: list[str],
        directory: DeviceDirectory,
        sink: Sink,
        data_dir: Path,
        spool_max_bytes: int,
        batch_points: int = 5000,
        flush_interval_s: float = 0.25,
        receive_maximum: int = 20_000,
        session_expiry_s: int = 7 * 24 * 3600,
        keepalive_s: int = 30,
        reconnect_delay_s: float = 2.0,
        reconnect_max_delay_s: float = 60.0,
        max_payload_bytes: int | None = None,
        quarantine_limits: dict[str, float] | None = None,
        mapper: FieldMapperLike | None = None,
        profiles: dict[str, Any] | None = None,
        enrichers: dict[str, Enricher] | None = None,
        readings_out: ReadingConsumer | None = None,
        diagnostics_flush: DiagnosticsFlush | None = None,
        diagnostics_interval_s: float = 5.0,
        state_interval_s: float = 30.0,
        protocol_version: int = 5,
        time_policy: TimePolicy | None = None,
        feed_sentinels: dict[str, dict[str, frozenset[float]]] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.sink = sink
        self.quarantine = QuarantineStore(self.data_dir / "quarantine.db", **(quarantine_limits or {}))  # type: ignore[arg-type]
        self.spool = DiskSpool(self.data_dir / "spool", spool_max_bytes)
        self.writer = BatchWriter(
            sink,
            self.spool,
            max_batch_points=batch_points,
            flush_interval_s=flush_interval_s,
            max_pending_points=max(receive_maximum * 2, batch_points * 4),
            on_rejected=self._quarantine_rejected_point,
        )
        self.enrichers = enrichers or {}
        self.diagnostics = DiagnosticsBuffer(is_registered=lambda device_id: directory.by_id(device_id) is not None)
        self.pipeline = Pipeline(
            inputs=inputs,
            directory=directory,
            writer=self.writer,
            quarantine=self.quarantine,
            mapper=mapper,
            profiles=profiles,
            enrichers=self.enrichers,
            diagnostics=self.diagnostics,
            readings_out=readings_out,
            time_policy=time_policy,
            feed_sentinels=feed_sentinels,
        )
        self.subscriber = MqttSubscriber(
            endpoint,
            client_id=client_id,
            topics=subscriptions,
            handler=self._submit if max_payload_bytes else self.pipeline.submit,
            receive_maximum=receive_maximum,
            session_expiry_s=session_expiry_s,
            keepalive_s=keepalive_s,
            reconnect_delay_s=reconnect_delay_s,
            reconnect_max_delay_s=reconnect_max_delay_s,
            # The broker discards (MQTT 5) what exceeds this; between the two limits we quarantine `too_large`.
            max_packet_bytes=max_payload_bytes + PACKET_HEADROOM_BYTES if max_payload_bytes else None,
            session_marker=self.data_dir / "mqtt-session",
            protocol_version=protocol_version,
        )
        self.max_payload_bytes = max_payload_bytes
        self.pipeline.flow = self.subscriber
        self._diagnostics_flush = diagnostics_flush
        self._diagnostics_interval_s = diagnostics_interval_s
        self._state_interval_s = state_interval_s
        self._state_path = self.data_dir / "enricher-state.json"
        self._tasks: list[asyncio.Task[None]] = []
        self._intake_stopped = False

    def _submit(self, topic: str, payload: bytes, received_ns: int) -> asyncio.Future[None]:
        if self.max_payload_bytes is not None and len(payload) > self.max_payload_bytes:
            # Never parsed, never kept whole: the quarantine stores its first bytes and its size.
            MQTT_TOO_LARGE.inc()
            return self.quarantine.add(
                topic=topic, payload=payload, reason="too_large", received_ns=received_ns,
                detail=f"{len(payload)} bytes, more than mqtt.max_payload_bytes = {self.max_payload_bytes}",
            )
        return self.pipeline.submit(topic, payload, received_ns)

    async def _quarantine_rejected_point(self, point: Point, server_message: str) -> None:
        from collectors.lineprotocol import encode_point

        try:
            line = encode_point(point).encode()
        except Exception:  # an unencodable point is exactly what we are quarantining
            line = repr(point).encode()
        await self.quarantine.add(
            topic=f"(sink) {point.measurement}",
            payload=line,
            reason="sink_rejected",
            detail=server_message,
            device_id=point.tags.get("device_id"),
            feed=point.tags.get("feed"),
        )

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> CollectorService:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._load_state()
        await self.writer.start()
        self._tasks = [
            asyncio.create_task(self._every(self._diagnostics_interval_s, self.flush_diagnostics), name="diagnostics"),
            asyncio.create_task(self._every(self._state_interval_s, self._save_state), name="enricher-state"),
        ]
        await self.subscriber.start()

    async def stop_intake(self) -> None:
        """Stop taking messages: in-flight ones reach the sink and are acknowledged, then MQTT disconnects.

        The writer stays open, so whatever consumes the stream (the rules engine) can still write its points.
        """
        if self._intake_stopped:
            return
        self._intake_stopped = True
        closing = asyncio.create_task(self.subscriber.close(), name="mqtt-close")
        await asyncio.sleep(0)
        self.writer.flush()
        await self.quarantine.flush()
        await closing

    async def close(self) -> None:
        await self.stop_intake()
        await self.writer.close()
        await self.quarantine.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush_diagnostics()
        self._save_state()
        await self.sink.close()

    async def _every(self, interval_s: float, action: Callable[[], Awaitable[None] | None]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                result = action()
                if result is not None:
                    await result
            except Exception:
                log.exception("periodic task %s failed", getattr(action, "__name__", action))

    # -- state that must survive a restart -------------------------------------------------------------------

    async def flush_diagnostics(self) -> None:
        new = self.diagnostics.take_new()  # taken on the loop; written to the registry in a thread
        if new and self._diagnostics_flush is not None:
            try:
                await asyncio.to_thread(self._diagnostics_flush, new)
            except Exception:  # not on cancellation: the thread may still complete the write
                self.diagnostics.put_back(new)  # the newest messages are written by the next flush
                raise

    def _save_state(self) -> None:
        state = {feed: enricher.export_state() for feed, enricher in self.enrichers.items()}
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(state))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        tmp.replace(self._state_path)

    def _load_state(self) -> None:
        if not self._state_path.exists():
            return
        try:
            state = orjson.loads(self._state_path.read_bytes())
        except orjson.JSONDecodeError:
            log.warning("ignoring unreadable enricher state %s", self._state_path)
            return
        for feed, enricher in self.enrichers.items():
            if isinstance(state.get(feed), dict):
                enricher.import_state(state[feed])

    # -- health ----------------------------------------------------------------------------------------------

    def health_checks(self) -> dict[str, Callable[[], dict[str, Any]]]:
        def broker() -> dict[str, Any]:
            return self.subscriber.health()

        def sink() -> dict[str, Any]:
            state = self.writer.health()
            healthy = bool(state.get("sink_up")) and not state.get("spool_full") and not state.get("refusing")
            return {"ok": healthy, **state}

        return {"broker": broker, "sink": sink}
