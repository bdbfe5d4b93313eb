"""The ingest pipeline for one message: format parser → registry → profile mapping → feed schema → derived
values → sink, and the rules engine's stream. Every message ends either stored or quarantined; the
coroutine returns only when that outcome is durable and the rules engine has committed the evaluation of
its readings, and the MQTT transport acknowledges then.

    transport ──bytes──▶ Pipeline.handle ──Point──▶ BatchWriter (sink | spool)   ─┐
                                │         └─Reading──▶ rules queue (bounded) ──────┼─▶ PUBACK
                                │                      (evaluated, committed)      │
                                └──rejected──▶ QuarantineStore (durable) ─────────┘
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from collectors.diagnostics import DiagnosticsBuffer
from collectors.directory import DeviceDirectory
from collectors.domain.base import Enricher
from collectors.errors import RejectedMessage
from collectors.feeds import FEED_SPECS
from collectors.feeds.fastcheck import FastCheck
from collectors.formats._common import mqtt_topic_matches
from collectors.formats.base import PayloadFormat
from collectors.metrics import MESSAGES_RECEIVED
from collectors.quarantine import QuarantineStore
from collectors.sinks.writer import WriterFull
from collectors.timecheck import TimePolicy
from core.model import DeviceInfo, Point, RawReading, Reading

log = logging.getLogger(__name__)



class ReadingConsumer(Protocol):
    """Whoever watches the stream of readings (the rules engine), through a bounded queue."""

    def offer_nowait(self, reading: Reading, device: DeviceInfo) -> bool:
        """Queue the reading if there is room; False when the queue is full."""

    async def offer(self, reading: Reading, device: DeviceInfo) -> None:
        """Queue the reading, waiting for room (backpressure)."""

    @property
    def offered(self) -> int:
        """How many readings were queued so far (the sequence number of the last one)."""

    def evaluated_through(self, seq: int) -> asyncio.Future[None]:
        """Done once the first `seq` readings queued are evaluated and their alert state changes committed."""


class _AckGroup:
    """The messages of one writer batch: acknowledged when the batch is stored and the last reading offered to
    the rules engine while it was open is evaluated (evaluations finish in offer order). One future per batch,
    as the writer's: the transport acknowledges a batch's messages together."""

    __slots__ = ("done", "stored", "through")

    def __init__(self, stored: asyncio.Future[None]) -> None:
        self.stored = stored
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.through = 0


class FlowControl(Protocol):
    """The transport's intake switch (`MqttSubscriber.hold` / `release`)."""

    def hold(self, reason: str) -> None: ...

    def release(self, reason: str) -> None: ...


class PointWriter(Protocol):
    """The sink seam as the pipeline sees it (`collectors.sinks.writer.BatchWriter`)."""

    def add(self, point: Point) -> asyncio.Future[None]:
        """Queue a point; its batch's future resolves when durable. Raises WriterFull when at its bound."""

    async def add_wait(self, point: Point) -> asyncio.Future[None]:
        """Like add, waiting for room."""


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
        writer: PointWriter,
        quarantine: QuarantineStore,
        mapper: FieldMapperLike | None = None,
        profiles: dict[str, Any] | None = None,
        enrichers: dict[str, Enricher] | None = None,
        diagnostics: DiagnosticsBuffer | None = None,
        readings_out: ReadingConsumer | None = None,
        time_policy: TimePolicy | None = None,
        feed_sentinels: dict[str, dict[str, frozenset[float]]] | None = None,
        fast_paths: bool = True,
    ) -> None:
        self.inputs = list(inputs)
        self.directory = directory
        self.writer = writer
        self.quarantine = quarantine
        self.mapper = mapper
        self.profiles = profiles or {}
        self.enrichers = enrichers or {}
        self.diagnostics = diagnostics or DiagnosticsBuffer()
        self.readings_out = readings_out
        self._format_by_topic: dict[str, PayloadFormat | None] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Readings the rules engine's queue had no room for; intake is held until this backlog has been handed
        # over. A message is acknowledged only when its data is stored and its reading evaluated: a crash loses
        # no evaluation (the broker redelivers what was not acknowledged).
        self._overflow: deque[tuple[Reading, DeviceInfo]] = deque()
        self._ack_group: _AckGroup | None = None
        self.flow: FlowControl | None = None
        self.time_policy = time_policy or TimePolicy()
        # Per feed, canonical field -> values that mean "missing" (power_kw -999, lat -1), for canonical payloads.
        self.feed_sentinels = (
            feed_sentinels if feed_sentinels is not None else {f: s.sentinel_sets() for f, s in FEED_SPECS.items()}
        )
        # Well-formed canonical values are checked without pydantic, with the same outcome (FastCheck's doc);
        # `fast_paths=False` runs the general path only (the equivalence tests compare the two).
        self.fast_paths = fast_paths
        self._fast_checks = {feed: FastCheck(spec.model) for feed, spec in FEED_SPECS.items()}
        self._measurements = {feed: spec.measurement for feed, spec in FEED_SPECS.items()}

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

    def _count_received(self, feed: str | None) -> None:
        MESSAGES_RECEIVED.inc(feed or "unknown")

    async def handle(self, topic: str, payload: bytes, received_ns: int) -> None:
        """Process one MQTT message; returns once everything it produced is durable."""
        await self.submit(topic, payload, received_ns)

    def submit(self, topic: str, payload: bytes, received_ns: int) -> asyncio.Future[None]:
        """Process one MQTT message without waiting: returns the future of its durable outcome (stored or
        quarantined). Never raises. The common case does no awaiting at all; only when the writer or the
        rules queue is full does the message wait in a task, and the transport stops reading meanwhile."""
        waits: list[asyncio.Future[None]] = []
        fmt = self.format_for(topic)
        if fmt is None:
            self._count_received(None)
            waits.append(self._reject(topic, payload, received_ns, RejectedMessage("no_format", "no input matches")))
        else:
            try:
                raws = fmt.parse(topic, payload, received_ns)
            except RejectedMessage as rejected:
                self._count_received(rejected.feed)
                raws = []
                waits.append(self._reject(topic, payload, received_ns, rejected))
            except Exception as exc:  # a parser bug must not stop the subscription: quarantine and go on
                log.exception("parser %s failed on %s", getattr(fmt, "name", fmt), topic)
                self._count_received(None)
                raws = []
                waits.append(self._reject(topic, payload, received_ns,
                                          RejectedMessage("parser_error", f"{type(exc).__name__}: {exc}")))
            for raw in raws:
                waits.extend(self._handle_reading(topic, payload, received_ns, raw))
        if len(waits) == 1:
            return waits[0]
        if not waits:
            return _done()
        return asyncio.gather(*waits)  # type: ignore[return-value]  # only its completion matters

    def _handle_reading(
        self, topic: str, payload: bytes, received_ns: int, raw: RawReading
    ) -> list[asyncio.Future[None]]:
        device: DeviceInfo | None = None
        try:
            device = self._resolve_device(raw)
            self._count_received(device.feed)
            reading = self._normalise(raw, device, received_ns)
        except RejectedMessage as rejected:
            if device is None:
                self._count_received(rejected.feed or raw.topic_feed)
            if rejected.device_id is None and device is not None:
                rejected.device_id = device.device_id
            if rejected.feed is None and device is not None:  # e.g. the mapping's unit rejection
                rejected.feed = device.feed
            return [self._reject(topic, payload, received_ns, rejected)]
        enricher = self.enrichers.get(device.feed)
        if enricher is not None:
            try:
                enricher.enrich(reading, device)
            except RejectedMessage as rejected:  # e.g. an interval no meter on this contract can produce
                rejected.device_id, rejected.feed = device.device_id, device.feed
                return [self._reject(topic, payload, received_ns, rejected)]
            except Exception:  # a derived value must never cost us the reading itself
                log.exception("enricher for %s failed on %s", device.feed, device.device_id)
        # Reading.to_point's point, without its per-call registry lookup of the measurement
        tags = {"device_id": reading.device_id, "feed": reading.feed, "city": reading.city,
                "district": reading.district}
        if reading.tags:
            tags.update(reading.tags)
        point = Point(self._measurements[reading.feed], tags, reading.fields, reading.time_ns)
        waits: list[asyncio.Future[None]] = []
        shared_batch = True  # waits[0] is the writer's batch future, shared by the batch's messages
        try:
            waits.append(self.writer.add(point))
        except WriterFull:
            shared_batch = False
            waits.append(self._later(self._add_when_room(point)))
        self.diagnostics.record(
            device.device_id, topic=topic, payload=payload, received_ns=received_ns, accepted=True,
            reading=reading.fields,
        )
        rules = self.readings_out
        if rules is None:
            return waits
        if self._overflow or not rules.offer_nowait(reading, device):
            self._overflow.append((reading, device))
            if len(self._overflow) == 1:
                if self.flow is not None:
                    self.flow.hold("rules")
                self._later(self._hand_over_overflow())
        # The reading's place in the engine's order: the backlog is handed over in order, before anything new
        # is offered (each hand-over moves one from the backlog to the queue: the sum stays).
        through = rules.offered + len(self._overflow)
        if shared_batch:
            waits[0] = self._stored_and_evaluated(waits[0], through)  # the common case: one future per batch
        else:
            waits.append(rules.evaluated_through(through))
        return waits

    def _stored_and_evaluated(self, stored: asyncio.Future[None], through: int) -> asyncio.Future[None]:
        group = self._ack_group
        if group is None or group.stored is not stored:
            group = self._ack_group = _AckGroup(stored)
            stored.add_done_callback(functools.partial(self._after_stored, group))
        group.through = through
        return group.done

    def _after_stored(self, group: _AckGroup, _stored: asyncio.Future[None]) -> None:
        """The batch is stored (or failed): now wait for the group's last evaluation (the batch is sealed, so
        `through` is final)."""
        if self._ack_group is group:
            self._ack_group = None
        stored = group.stored
        if stored.cancelled() or stored.exception() is not None:
            _chain(group.done, stored)
            return
        assert self.readings_out is not None
        self.readings_out.evaluated_through(group.through).add_done_callback(functools.partial(_chain, group.done))

    async def _hand_over_overflow(self) -> None:
        assert self.readings_out is not None
        try:
            while self._overflow:
                reading, device = self._overflow[0]
                await self.readings_out.offer(reading, device)
                self._overflow.popleft()
        finally:
            # Cancelled (stopping): what is left stays in the backlog, so nothing offered later takes its place
            # in the engine's order (it would acknowledge messages whose readings were never evaluated).
            if self.flow is not None:
                self.flow.release("rules")

    async def _add_when_room(self, point: Point) -> None:
        await (await self.writer.add_wait(point))

    def _later(self, work: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _resolve_device(self, raw: RawReading) -> DeviceInfo:
        ref = raw.device
        device = None
        # A DevEUI is the stable LoRaWAN identity; a network-server device name is only a label.
        if ref.dev_eui:
            device = self.directory.by_dev_eui(ref.dev_eui)
        if ref.dev_eui and ref.device_id:
            self._check_identity(ref.dev_eui, ref.device_id, device, raw)
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

    def _check_identity(self, dev_eui: str, name: str, by_eui: DeviceInfo | None, raw: RawReading) -> None:
        """An envelope that names a registered device whose registered DevEUI is another one is not stored under
        either: a misconfigured or hostile network-server entry must not write into a device's history."""
        named = self.directory.by_id(name)
        if named is None or (by_eui is not None and by_eui.device_id == named.device_id):
            return  # the name is only a label, or both agree
        if by_eui is None and not named.dev_eui:
            return  # the registry knows no DevEUI for the named device: nothing disagrees
        registered = by_eui.device_id if by_eui is not None else None
        raise RejectedMessage(
            "identity_mismatch",
            f"the envelope names device {name!r} (registered DevEUI {named.dev_eui or 'none'}) but carries DevEUI "
            f"{dev_eui}" + (f", registered to device {registered!r}" if registered else ", registered to no device"),
            device_id=named.device_id,
            feed=raw.topic_feed,
        )

    def _normalise(self, raw: RawReading, device: DeviceInfo, received_ns: int) -> Reading:
        spec = FEED_SPECS[device.feed]
        values = raw.values
        mapping = device.mapping or device.profile
        profile = self.profiles.get(mapping) if mapping else None
        # Vendor data (a profile, or declared units) is read leniently by the mapping; a device speaking our
        # canonical contract is held to it strictly: a wrong type is an error, not something to guess at.
        lenient = self.mapper is not None and (profile is not None or bool(raw.units))
        if lenient and self.mapper is not None:
            values, _notes = self.mapper.map(raw, device.feed, profile, device.site, device.calibration)
        values = _drop_sentinels(values, self.feed_sentinels.get(device.feed))
        # 0 is a time too (1970): only a missing time means "now"; the policy then judges it
        time_ns = received_ns if raw.time_ns is None else raw.time_ns
        try:
            self.time_policy.check(time_ns, received_ns)
        except RejectedMessage as rejected:
            rejected.device_id, rejected.feed = device.device_id, device.feed
            raise
        fast = self._fast_checks.get(device.feed) if self.fast_paths else None
        fields = fast.fields(values) if fast is not None else None
        if fields is None:  # not the common well-formed case: pydantic decides (and words any rejection)
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
            time_ns=time_ns,
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


def _chain(target: asyncio.Future[None], source: asyncio.Future[None]) -> None:
    """Give `target` the outcome of the finished `source` (unless it has one)."""
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (exc := source.exception()) is not None:
        target.set_exception(exc)
    else:
        target.set_result(None)


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _drop_sentinels(values: dict[str, Any], sentinels: dict[str, frozenset[float]] | None) -> dict[str, Any]:
    """`values` without the feed's sentinel values (a new dict only when one is found)."""
    if not sentinels:
        return values
    for k, v in values.items():
        bad = sentinels.get(k)
        # True == 1 in a set: booleans are never sentinels; unhashable values (lists) are not numbers
        if bad is not None and type(v) in (int, float) and v in bad:
            return {k2: v2 for k2, v2 in values.items() if not (k2 in sentinels and type(v2) in (int, float)
                                                                 and v2 in sentinels[k2])}
    return values


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
