"""The MQTT transport: subscribe at QoS 1 with a persistent session and acknowledge only after storage.

It knows nothing about payloads: each message is handed, as bytes, to an injected handler that returns the
future of its durable outcome (stored, or quarantined); the PUBACK is sent when that future resolves.

Why gmqtt, and why this module reaches into it (see README "Choosing the MQTT client"): gmqtt 0.8 speaks
MQTT 5 on asyncio and received ~21,000 QoS 1 msg/s here where paho reached ~13,600 and aiomqtt cannot
acknowledge after processing at all. Its own "ack when the handler returns" path costs an asyncio task and a
socket write per message and parses every property, so for PUBLISH packets this module installs its own
handler (a lean parse, no task per message, PUBACKs for a whole batch in one write) and keeps gmqtt for the
rest: connecting, keepalive, reconnecting, subscribing. The private hooks used are pinned by the version
range in pyproject.toml and covered by the end-to-end tests.

Flow control is explicit: past `max_in_flight` unacknowledged messages the socket stops being read (TCP
backpressure: the broker queues for us, its session keeps them), and reading resumes at half that. The
broker's own Receive Maximum is requested too, but Mosquitto 2.0 was measured exceeding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from gmqtt import Client, Subscription
from gmqtt.mqtt.constants import MQTTCommands, MQTTv50, MQTTv311

from collectors.metrics import ACK_DELAY_SECONDS, MQTT_CONNECTED, PENDING_MESSAGES

__all__ = ["MQTTv50", "MQTTv311", "MessageHandler", "MqttEndpoint", "MqttSubscriber"]

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, int], "asyncio.Future[None]"]
"""handler(topic, payload, received_ns) -> the future of the message's durable outcome (never raises)."""


@dataclass(slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:  # never show the password
        return f"MqttEndpoint({self.host}:{self.port}, user={self.username!r}, tls={self.tls})"


def _puback(mid: int) -> bytes:
    # Remaining length 2: reason code and properties omitted, which means Success (MQTT 5 §3.4.2.1; 3.1.1 form)
    return bytes((0x40, 0x02, mid >> 8, mid & 0xFF))


class MqttSubscriber:
    """`async with MqttSubscriber(...)`: receives, hands each message to `handler`, acknowledges when durable.

    `close()` stops acknowledging new work, waits for what is in flight (so its PUBACKs go out), then
    disconnects, keeping the broker-side session so nothing unacknowledged is lost.
    """

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str,
        topics: list[str],
        handler: MessageHandler,
        receive_maximum: int = 20_000,
        session_expiry_s: int = 7 * 24 * 3600,
        keepalive_s: int = 30,
        reconnect_delay_s: float = 2.0,
        protocol_version: int = MQTTv50,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.topics = topics
        self._handler = handler
        self.max_in_flight = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        self._reconnect_delay_s = reconnect_delay_s
        # MQTT 3.1.1 is only for the embedded demo broker (amqtt speaks nothing newer); production is MQTT 5.
        self.protocol_version = protocol_version
        self._client: Client | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._paused = False
        self._holds: set[str] = set()  # other reasons to stop reading, e.g. the rules engine's queue is full
        # A redelivered message keeps its packet id only within the session: acks are sent on the connection
        # generation they arrived on, and dropped (the redelivered copy is acknowledged instead) after a reconnect.
        self._generation = 0
        self._acks_by_future: dict[asyncio.Future[None], list[int]] = {}
        self.last_error: str | None = None
        PENDING_MESSAGES.set_function(lambda: self._in_flight)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def paused(self) -> bool:
        return self._paused

    async def __aenter__(self) -> MqttSubscriber:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- connection ---------------------------------------------------------------------------------------------

    def _make_client(self) -> Client:
        client = Client(
            self.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            receive_maximum=min(self.max_in_flight, 65535),
            session_expiry_interval=self._session_expiry_s,
        )
        client.set_config({"reconnect_retries": -1, "reconnect_delay": self._reconnect_delay_s})
        if self.endpoint.username:
            client.set_auth_credentials(self.endpoint.username, self.endpoint.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        # Our PUBLISH handler replaces gmqtt's (see the module docstring); gmqtt dispatches by command type.
        client._package_handler._handler_cache[MQTTCommands.PUBLISH] = self._on_publish_packet
        return client

    async def start(self, *, connect_timeout_s: float | None = None) -> None:
        """Connect (retrying until the broker answers, or `connect_timeout_s`) and subscribe."""
        deadline = None if connect_timeout_s is None else time.monotonic() + connect_timeout_s
        while True:
            client = self._make_client()
            self._client = client
            try:
                await client.connect(
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=ssl.create_default_context() if self.endpoint.tls else False,
                    keepalive=self._keepalive_s,
                    version=self.protocol_version,
                )
                return
            except Exception as exc:  # refused, unreachable, bad credentials: report and retry
                self.last_error = f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: {exc}"
                log.warning("%s; retrying in %.1fs", self.last_error, self._reconnect_delay_s)
                with contextlib.suppress(Exception):
                    await client.disconnect()
                if deadline is not None and time.monotonic() > deadline:
                    raise ConnectionError(self.last_error) from None
                await asyncio.sleep(self._reconnect_delay_s)

    def _on_connect(self, client: Client, flags: Any, rc: int, properties: Any) -> None:
        self._generation += 1
        self._paused = False
        self._connected.set()
        self.last_error = None
        MQTT_CONNECTED.set(1)
        # Subscribing on every (re)connect is harmless with a persistent session and repairs a lost one.
        client.subscribe([Subscription(topic, qos=1) for topic in self.topics])

    def _on_disconnect(self, client: Client, packet: Any, exc: BaseException | None = None) -> None:
        self._connected.clear()
        MQTT_CONNECTED.set(0)
        if exc is not None:
            self.last_error = f"disconnected: {exc}"

    # -- receiving ----------------------------------------------------------------------------------------------

    def _on_publish_packet(self, cmd: int, raw: bytes) -> None:
        qos = (cmd >> 1) & 0x03
        topic_length = (raw[0] << 8) | raw[1]
        topic = raw[2 : 2 + topic_length].decode("utf-8", errors="replace")
        position = 2 + topic_length
        mid = 0
        if qos:
            mid = (raw[position] << 8) | raw[position + 1]
            position += 2
        if self.protocol_version >= MQTTv50:
            # properties: a variable-byte length, then the properties (we ask for none we need: no topic aliases)
            length = multiplier = 0
            while True:
                byte = raw[position]
                position += 1
                length += (byte & 0x7F) << multiplier
                if not byte & 0x80:
                    break
                multiplier += 7
            position += length
        payload = raw[position:]
        if self._closing:
            return  # not acknowledged: the broker redelivers it to our next session
        if qos == 0:
            self._handler(topic, payload, time.time_ns())
            return
        self._in_flight += 1
        self._idle.clear()
        received_ns = time.time_ns()
        outcome = self._handler(topic, payload, received_ns)
        waiting = self._acks_by_future.get(outcome)
        if waiting is None:
            # [generation, first receipt time, mid, mid, ...]: one entry (and one PUBACK write) per batch
            self._acks_by_future[outcome] = [self._generation, received_ns, mid]
            outcome.add_done_callback(self._acknowledge)
        else:
            waiting.append(mid)
        if self._in_flight >= self.max_in_flight or self._holds:
            # Every time, not only on crossing: asyncio's StreamReader may resume reading for its own buffer's
            # sake, and that must not lift our limit.
            self._pause()

    def _acknowledge(self, outcome: asyncio.Future[None]) -> None:
        entry = self._acks_by_future.pop(outcome)
        generation, first_received_ns, mids = entry[0], entry[1], entry[2:]
        self._in_flight -= len(mids)
        if self._in_flight == 0:
            self._idle.set()
        failed = outcome.cancelled() or outcome.exception() is not None
        if failed:
            # Never acknowledge what was not stored: the broker redelivers it on the next session.
            log.error("%d messages not acknowledged: %s", len(mids), "cancelled" if outcome.cancelled()
                      else outcome.exception())
        elif generation == self._generation and self._client is not None and self.connected:
            connection = self._client._connection
            if connection is not None:
                connection.send_package(b"".join(_puback(mid) for mid in mids))
                ACK_DELAY_SECONDS.observe((time.time_ns() - first_received_ns) / 1e9)
        if self._paused and not self._holds and self._in_flight <= self.max_in_flight // 2:
            self._resume()

    def hold(self, reason: str) -> None:
        """Stop reading from the broker until `release(reason)` (explicit backpressure from downstream)."""
        self._holds.add(reason)
        self._pause()

    def release(self, reason: str) -> None:
        self._holds.discard(reason)
        if self._paused and not self._holds and self._in_flight <= self.max_in_flight // 2:
            self._resume()

    def _transport(self) -> asyncio.Transport | None:
        connection = self._client._connection if self._client is not None else None
        protocol = getattr(connection, "_protocol", None)
        return getattr(protocol, "_transport", None)

    def _pause(self) -> None:
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
            self._paused = True

    def _resume(self) -> None:
        self._paused = False
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    # -- stopping -----------------------------------------------------------------------------------------------

    async def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until every received message was acknowledged (or dropped as failed)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def close(self, *, drain_timeout_s: float = 30.0) -> None:
        if self._closed.is_set():
            return
        self._closing = True
        if self._client is not None:
            # Let in-flight messages reach storage so their PUBACKs go out before we leave.
            await self.wait_idle(drain_timeout_s)
            with contextlib.suppress(Exception):
                await self._client.disconnect()
        self._connected.clear()
        MQTT_CONNECTED.set(0)
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
