"""The ingest pipeline for one message: format parser → registry → profile mapping → feed schema → derived
values → sink, and the rules engine's stream. Every message ends either stored or quarantined; the
coroutine returns only when that outcome is durable, and the MQTT transport acknowledges then.

    transport ──bytes──▶ Pipeline.handle ──Point──▶ BatchWriter (sink | spool)   ─┐
                                │         └─Reading──▶ rules queue (bounded)       ├─▶ PUBACK
                                └──rejected──▶ QuarantineStore (durable) ─────────┘
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from collectors.diagnostics import DiagnosticsBuffer
from collectors.directory import DeviceDirectory
from collectors.domain.base import Enricher
from collectors.errors import RejectedMessage
from collectors.feeds import FEED_SPECS
from collectors.formats._common import mqtt_topic_matches
from collectors.formats.base import PayloadFormat
from collectors.metrics import MESSAGES_RECEIVED
from collectors.model import DeviceInfo, Point, RawReading, Reading
from collectors.quarantine import QuarantineStore

log = logging.getLogger(__name__)

ReadingConsumer = Callable[[Reading, DeviceInfo], Awaitable[None]]
PointWriter = Callable[[Point], Awaitable["asyncio.Future[None]"]]


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic-filter matching (`+` one level, `#` the rest); `$share/<group>/` prefixes are ignored."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    return mqtt_topic_matches(topic_filter, topic)


@dataclass(slots=True)
class Input:
    """A subscription's topic filters and the parser its messages are given to."""

    topics: list[str]
    format: PayloadFormat


class FieldMapperLike(Protocol):
    """The mapping seam (`collectors.mapping.FieldMapper`): vendor values to canonical ones."""

    def map(
        self, raw: RawReading, feed: str, profile: Any, site: dict[str, Any], calibration: dict[str, dict[str, float]]
    ) -> tuple[dict[str, Any], list[str]]: ...


class Pipeline:
    def __init__(
        self,
        *,
        inputs: Sequence[Input],
        directory: DeviceDirectory,
        write_point: PointWriter,
        quarantine: QuarantineStore,
        mapper: FieldMapperLike | None = None,
        profiles: dict[str, Any] | None = None,
        enrichers: dict[str, Enricher] | None = None,
        diagnostics: DiagnosticsBuffer | None = None,
        readings_out: ReadingConsumer | None = None,
    ) -> None:
        self.inputs = list(inputs)
        self.directory = directory
        self.write_point = write_point
        self.quarantine = quarantine
        self.mapper = mapper
        self.profiles = profiles or {}
        self.enrichers = enrichers or {}
        self.diagnostics = diagnostics or DiagnosticsBuffer()
        self.readings_out = readings_out
        self._format_by_topic: dict[str, PayloadFormat | None] = {}

    def format_for(self, topic: str) -> PayloadFormat | None:
        try:
            return self._format_by_topic[topic]
        except KeyError:
            pass
        found = next((i.format for i in self.inputs if any(topic_matches(f, topic) for f in i.topics)), None)
        if len(self._format_by_topic) > 200_000:  # bounded: topics are per device
            self._format_by_topic.clear()
        self._format_by_topic[topic] = found
        return found

    async def handle(self, topic: str, payload: bytes, received_ns: int) -> None:
        """Process one MQTT message; returns once everything it produced is durable."""
        waits: list[asyncio.Future[None]] = []
        fmt = self.format_for(topic)
        if fmt is None:
            MESSAGES_RECEIVED.labels("unknown").inc()
            waits.append(self._reject(topic, payload, received_ns, RejectedMessage("no_format", "no input matches")))
        else:
            try:
                raws = fmt.parse(topic, payload, received_ns)
            except RejectedMessage as rejected:
                MESSAGES_RECEIVED.labels(rejected.feed or "unknown").inc()
                waits.append(self._reject(topic, payload, received_ns, rejected))
                raws = []
            for raw in raws:
                waits.append(await self._handle_reading(topic, payload, received_ns, raw))
        if len(waits) == 1:
            await waits[0]
        elif waits:
            await asyncio.gather(*waits)

    async def _handle_reading(
        self, topic: str, payload: bytes, received_ns: int, raw: RawReading
    ) -> asyncio.Future[None]:
        device: DeviceInfo | None = None
        try:
            device = self._resolve_device(raw)
            MESSAGES_RECEIVED.labels(device.feed).inc()
            reading = self._normalise(raw, device, received_ns)
        except RejectedMessage as rejected:
            if device is None:
                MESSAGES_RECEIVED.labels(rejected.feed or raw.topic_feed or "unknown").inc()
            if rejected.device_id is None and device is not None:
                rejected.device_id = device.device_id
            return self._reject(topic, payload, received_ns, rejected)
        enricher = self.enrichers.get(device.feed)
        if enricher is not None:
            try:
                enricher.enrich(reading, device)
            except Exception:  # a derived value must never cost us the reading itself
                log.exception("enricher for %s failed on %s", device.feed, device.device_id)
        stored = await self.write_point(reading.to_point())
        self.diagnostics.record(
            device.device_id, topic=topic, payload=payload, received_ns=received_ns, accepted=True,
            reading=reading.fields,
        )
        if self.readings_out is not None:
            await self.readings_out(reading, device)
        return stored

    def _resolve_device(self, raw: RawReading) -> DeviceInfo:
        ref = raw.device
        device = None
        # A DevEUI is the stable LoRaWAN identity; a network-server device name is only a label.
        if ref.dev_eui:
            device = self.directory.by_dev_eui(ref.dev_eui)
        if device is None and ref.device_id:
            device = self.directory.by_id(ref.device_id)
        if device is None:
            raise RejectedMessage("unknown_device", f"device {ref} is not registered", feed=raw.topic_feed)
        if device.status != "active":
            raise RejectedMessage(
                "retired_device", f"device {device.device_id} is {device.status}", device_id=device.device_id,
                feed=device.feed,
            )
        if raw.topic_feed is not None and raw.topic_feed != device.feed:
            raise RejectedMessage(
                "feed_mismatch",
                f"topic says feed {raw.topic_feed!r} but device {device.device_id} is registered as {device.feed!r}",
                device_id=device.device_id, feed=device.feed,
            )
        if raw.topic_city is not None and raw.topic_city != device.city:
            raise RejectedMessage(
                "city_mismatch",
                f"topic says city {raw.topic_city!r} but device {device.device_id} is registered in {device.city!r}",
                device_id=device.device_id, feed=device.feed,
            )
        return device

    def _normalise(self, raw: RawReading, device: DeviceInfo, received_ns: int) -> Reading:
        spec = FEED_SPECS[device.feed]
        values = raw.values
        profile = self.profiles.get(device.profile) if device.profile else None
        # Vendor data (a profile, or declared units) is read leniently by the mapping; a device speaking our
        # canonical contract is held to it strictly: a wrong type is an error, not something to guess at.
        lenient = self.mapper is not None and (profile is not None or bool(raw.units))
        if lenient and self.mapper is not None:
            values, _notes = self.mapper.map(raw, device.feed, profile, device.site, device.calibration)
        try:
            model = spec.model.model_validate(values)
        except ValidationError as exc:
            raise RejectedMessage(
                "invalid_field", _describe(exc), device_id=device.device_id, feed=device.feed
            ) from None
        fields = model.model_dump(exclude_none=True)
        if not lenient and device.calibration:
            _calibrate(fields, device.calibration)
        if not fields:
            known = ", ".join(spec.field_names)
            raise RejectedMessage(
                "no_known_fields",
                f"none of the {device.feed} fields present (known: {known}); "
                f"got keys: {', '.join(sorted(values))[:300]}",
                device_id=device.device_id, feed=device.feed,
            )
        return Reading(
            device_id=device.device_id,
            feed=device.feed,
            city=device.city,
            district=device.district,
            time_ns=raw.time_ns or received_ns,
            fields=fields,
        )

    def _reject(self, topic: str, payload: bytes, received_ns: int, rejected: RejectedMessage) -> asyncio.Future[None]:
        if rejected.device_id:
            self.diagnostics.record(
                rejected.device_id, topic=topic, payload=payload, received_ns=received_ns, accepted=False,
                reason=f"{rejected.reason}: {rejected.detail}",
            )
        return self.quarantine.add(
            topic=topic, payload=payload, reason=rejected.reason, detail=rejected.detail, received_ns=received_ns,
            device_id=rejected.device_id, feed=rejected.feed,
        )


def _calibrate(fields: dict[str, Any], calibration: dict[str, dict[str, float]]) -> None:
    """Per-device calibration (value × scale + offset) of float fields, as the registry's override says."""
    for name, cal in calibration.items():
        value = fields.get(name)
        if isinstance(value, float):
            fields[name] = value * float(cal.get("scale", 1.0)) + float(cal.get("offset", 0.0))


def _describe(exc: ValidationError) -> str:
    """`pm25_ugm3: Input should be less than or equal to 1000 (got 2000)` for each bad field."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        parts.append(f"{where}: {error['msg']} (got {error.get('input')!r:.60})")
    return "; ".join(parts)
