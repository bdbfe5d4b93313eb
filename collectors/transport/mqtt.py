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

Connections are supervised here, not by gmqtt (whose reconnect gives up for good on a "permanent" CONNACK
refusal such as 0x87, although an operator fixing the broker's ACL makes it succeed a minute later): every
loss or refusal is retried forever with capped exponential backoff and jitter, and the reason (refused with
code, unreachable, session taken over by another client, keepalive lost) is kept for `/healthz` and counted.

While reading is paused the broker's PINGRESPs are not read either, and gmqtt would call the peer dead after
two keepalives. A pause is our choice, not the peer's silence, so while paused the connection's "last data
in" is kept fresh (gmqtt still sends PINGREQs, which keeps the broker's side alive), and a dead peer is
detected by the kernel instead: TCP_USER_TIMEOUT drops the connection when what we send (PINGREQs, PUBACKs)
stays unacknowledged for two keepalives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from gmqtt import Client, Subscription
from gmqtt.mqtt.constants import MQTTCommands, MQTTv50, MQTTv311

from collectors.metrics import (
    ACK_DELAY_SECONDS,
    MQTT_CONNECT_ATTEMPTS,
    MQTT_CONNECT_REFUSED,
    MQTT_CONNECTED,
    MQTT_DISCONNECTS,
    MQTT_SESSION_LOST,
    MQTT_SESSION_TAKEN_OVER,
    PENDING_MESSAGES,
)

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


SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: another connection used our client id
RETAIN_ONLY_FOR_NEW_SUBSCRIPTION = 1  # MQTT 5 retain handling: no retained replay when the subscription exists


class Backoff:
    """Capped exponential backoff with jitter: initial, ×2 per failure up to `max_s`, reset on success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max(max_s, initial_s)
        self._next = initial_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay * random.uniform(0.8, 1.2)  # jitter: many replicas must not retry in lockstep

    def reset(self) -> None:
        self._next = self.initial_s


def _puback(mid: int) -> bytes:
    # Remaining length 2: reason code and properties omitted, which means Success (MQTT 5 §3.4.2.1; 3.1.1 form)
    return bytes((0x40, 0x02, mid >> 8, mid & 0xFF))


class MqttSubscriber:
    """`async with MqttSubscriber(...)`: receives, hands each message to `handler`, acknowledges when durable.

    `close()` stops reading (nothing is taken that will not be acknowledged), waits for what is in flight (so
    its PUBACKs go out), then sends DISCONNECT, keeping the broker-side session so nothing unacknowledged is
    lost.
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
        reconnect_max_delay_s: float = 60.0,
        max_packet_bytes: int | None = None,
        session_marker: Path | None = None,
        protocol_version: int = MQTTv50,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.topics = topics
        self._handler = handler
        self.max_in_flight = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        self._backoff = Backoff(reconnect_delay_s, reconnect_max_delay_s)
        self._max_packet_bytes = max_packet_bytes
        # Exists once we held a session at this broker: a later "no session" then means the broker lost it.
        self._session_marker = session_marker
        # MQTT 3.1.1 is only for the embedded demo broker (amqtt speaks nothing newer); production is MQTT 5.
        self.protocol_version = protocol_version
        self._client: Client | None = None
        self._up_client: Client | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._paused = False
        self._pause_keeper: asyncio.TimerHandle | None = None
        self._holds: set[str] = set()  # other reasons to stop reading, e.g. the rules engine's queue is full
        # A redelivered message keeps its packet id only within the session: acks are sent on the connection
        # generation they arrived on, and dropped (the redelivered copy is acknowledged instead) after a reconnect.
        self._generation = 0
        self._acks_by_future: dict[asyncio.Future[None], list[int]] = {}
        self.last_error: str | None = None
        self.reason: str | None = "connecting"  # why we are not connected (None while connected), for /healthz
        self.session_present: bool | None = None
        self.sessions_lost = 0
        self.takeovers = 0
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

    @property
    def generation(self) -> int:
        """How many connections were established (a reconnect increments it)."""
        return self._generation

    def health(self) -> dict[str, Any]:
        return {"ok": self.connected, "reason": self.reason, "error": self.last_error, "in_flight": self.in_flight,
                "paused": self.paused, "session_present": self.session_present, "sessions_lost": self.sessions_lost,
                "taken_over": self.takeovers}

    async def __aenter__(self) -> MqttSubscriber:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- connection ---------------------------------------------------------------------------------------------

    def _make_client(self) -> Client:
        properties: dict[str, Any] = {}
        if self._max_packet_bytes and self.protocol_version >= MQTTv50:
            # MQTT 5 Maximum Packet Size: the broker must not send us anything larger (it discards it instead)
            properties["maximum_packet_size"] = self._max_packet_bytes
        client = Client(
            self.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            receive_maximum=min(self.max_in_flight, 65535),
            session_expiry_interval=self._session_expiry_s,
            **properties,
        )
        if self.endpoint.username:
            client.set_auth_credentials(self.endpoint.username, self.endpoint.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        handler = client._package_handler
        # gmqtt's own reconnect is replaced by our supervisor (see the module docstring).
        handler._reconnect_callback = partial(self._gmqtt_lost, client)
        # Our PUBLISH handler replaces gmqtt's (see the module docstring); gmqtt dispatches by command type.
        handler._handler_cache[MQTTCommands.PUBLISH] = self._on_publish_packet
        gmqtt_disconnect = handler._handle_disconnect_packet
        handler._handler_cache[MQTTCommands.DISCONNECT] = partial(self._on_disconnect_packet, gmqtt_disconnect)
        return client

    async def start(self, *, connect_timeout_s: float | None = None) -> None:
        """Connect (retrying until the broker accepts us, or `connect_timeout_s`) and subscribe; from then on
        every loss is reconnected in the background, forever, until `close()`."""
        deadline = None if connect_timeout_s is None else time.monotonic() + connect_timeout_s
        while not await self._attempt():
            if deadline is not None and time.monotonic() > deadline:
                raise ConnectionError(self.last_error)
            await self._sleep_backoff()
        self._supervisor = asyncio.create_task(self._supervise(), name="mqtt-reconnect")

    async def _supervise(self) -> None:
        while not self._closing:
            await self._lost.wait()
            self._lost.clear()
            if self._closing:
                return
            await self._sleep_backoff()  # also after a takeover: the other client must not be fought at once
            while not self._closing and not await self._attempt():
                await self._sleep_backoff()

    async def _sleep_backoff(self) -> None:
        delay = self._backoff.next_delay()
        log.info("reconnecting to %s:%s in %.1fs", self.endpoint.host, self.endpoint.port, delay)
        await asyncio.sleep(delay)

    async def _attempt(self) -> bool:
        """One connection attempt; True when connected (and subscribed)."""
        if self._closing:
            return False
        previous = self._client
        if previous is not None:
            previous._is_active = False  # a superseded client must never reconnect on its own
        client = self._make_client()
        self._client = client
        try:
            await asyncio.wait_for(
                client.connect(
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=ssl.create_default_context() if self.endpoint.tls else False,
                    keepalive=self._keepalive_s,
                    version=self.protocol_version,
                ),
                timeout=max(10.0, 2.0 * self._keepalive_s),
            )
        except Exception as exc:  # refused, unreachable, bad credentials: report and retry, never give up
            code = getattr(exc, "_code", None)
            if isinstance(code, int):
                self.reason = "connect_refused"
                MQTT_CONNECT_REFUSED.labels(code=hex(code)).inc()
                MQTT_CONNECT_ATTEMPTS.labels(outcome="refused").inc()
            else:
                self.reason = "unreachable"
                MQTT_CONNECT_ATTEMPTS.labels(outcome="unreachable").inc()
            detail = str(exc) or type(exc).__name__
            self.last_error = f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: {detail}"
            log.warning("%s (as client id %r); will retry", self.last_error, self.client_id)
            client._is_active = False
            transport = self._client_transport(client)
            if transport is not None:
                transport.close()
            return False
        if self._up_client is not client:  # CONNACK 0 arrived but on_connect did not run: treat as a failure
            return False
        MQTT_CONNECT_ATTEMPTS.labels(outcome="ok").inc()
        self._backoff.reset()
        return True

    async def _gmqtt_lost(self, client: Client, delay: bool = False) -> None:
        """Installed as gmqtt's reconnect callback: gmqtt found the connection gone; our supervisor reconnects."""
        if client is self._up_client:
            self._up_client = None
            self._lost.set()

    def _on_disconnect_packet(self, gmqtt_handler: Callable[[int, bytes], None], cmd: int, packet: bytes) -> None:
        """Say why the connection ended. A broker's DISCONNECT carries a reason code; gmqtt's synthetic one (the
        socket closed) is empty: then either gmqtt gave up on keepalive, or the broker closed the socket."""
        if self._up_client is not None and not self._closing:
            if packet:
                code = packet[0]
                if code == SESSION_TAKEN_OVER:
                    self._taken_over("the broker said another connection took over our session (0x8E)")
                else:
                    self._disconnected("disconnected_by_broker", f"the broker sent DISCONNECT {hex(code)}")
            elif self._heartbeat_lost():
                self._disconnected("keepalive_timeout", f"no answer from the broker for {2 * self._keepalive_s}s")
            else:
                # Mosquitto 2.0 closes the old connection of a taken-over session without a DISCONNECT; a broker
                # shutting down or an administrator's kick looks the same from here.
                self._disconnected(
                    "closed_by_broker",
                    f"the broker closed our connection: another client using our client id {self.client_id!r} "
                    "(session takeover), a broker restart, or an administrator",
                )
        gmqtt_handler(cmd, packet)

    def _heartbeat_lost(self) -> bool:
        connection = self._up_client._connection if self._up_client is not None else None
        last_in = getattr(connection, "_last_data_in", None)
        return bool(self._keepalive_s) and last_in is not None and time.monotonic() - last_in >= 2 * self._keepalive_s

    def _taken_over(self, detail: str) -> None:
        self.takeovers += 1
        MQTT_SESSION_TAKEN_OVER.inc()
        self._disconnected("session_taken_over", f"{detail}: messages for client id {self.client_id!r} went to it")

    def _disconnected(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.last_error = detail
        MQTT_DISCONNECTS.labels(reason=reason).inc()
        log.warning("MQTT connection lost (%s): %s; reconnecting with backoff", reason, detail)

    def _on_connect(self, client: Client, flags: Any, rc: int, properties: Any) -> None:
        if self._client is None or client is not self._client:  # a superseded attempt's late CONNACK
            return
        self._generation += 1
        self._up_client = client
        self._paused = False
        self._connected.set()
        self.last_error = None
        self.reason = None
        MQTT_CONNECTED.set(1)
        self._tune_socket(client)
        self.session_present = bool(flags)
        had_session = self._generation > 1 or (self._session_marker is not None and self._session_marker.exists())
        if not self.session_present and had_session:
            # Whatever was queued for us (and not yet delivered) is gone: the broker restarted without its
            # persistence, or the session expired (session_expiry_s) while we were away.
            self.sessions_lost += 1
            MQTT_SESSION_LOST.inc()
            log.error("broker lost our session (client id %r): messages it held for us while we were away are "
                      "gone; resubscribing now", self.client_id)
        # Subscribing on every (re)connect is harmless with a persistent session and repairs a lost one.
        # Retained messages are sent only for a new subscription, so a reconnect or restart does not ingest
        # them again; after a lost session they come once more (at-least-once, see the README).
        # (MQTT 3.1.1, the demo broker, has no subscription options: there the byte is the QoS alone.)
        retain_handling = RETAIN_ONLY_FOR_NEW_SUBSCRIPTION if self.protocol_version >= MQTTv50 else 0
        client.subscribe([Subscription(topic, qos=1, retain_handling_options=retain_handling)
                          for topic in self.topics])
        if self._session_marker is not None and not self._session_marker.exists():
            with contextlib.suppress(OSError):
                self._session_marker.write_text(f"{self.client_id}\n")

    def _on_disconnect(self, client: Client, packet: Any, exc: BaseException | None = None) -> None:
        if client is not self._client:
            return
        self._connected.clear()
        MQTT_CONNECTED.set(0)
        self._stop_pause_keeper()

    def _tune_socket(self, client: Client) -> None:
        transport = self._client_transport(client)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or not self._keepalive_s:
            return
        with contextlib.suppress(OSError, AttributeError):
            # Dead-peer detection that works while reading is paused (see the module docstring).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(2 * self._keepalive_s * 1000))

    # -- receiving ----------------------------------------------------------------------------------------------

    def _on_publish_packet(self, cmd: int, raw: bytes) -> None:
        if self._closing:
            return  # not acknowledged: the broker redelivers it to our next session
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
        self._in_flight += 1
        self._idle.clear()
        received_ns = time.time_ns()
        outcome = self._handler(topic, payload, received_ns)
        waiting = self._acks_by_future.get(outcome)
        if waiting is None:
            # [generation, first receipt time, QoS 0 count, mid, mid, ...]: one entry (one PUBACK write) per batch.
            # QoS 0 messages are counted in flight too (flow control like QoS 1) but never acknowledged.
            waiting = self._acks_by_future[outcome] = [self._generation, received_ns, 0]
            outcome.add_done_callback(self._acknowledge)
        if qos:
            waiting.append(mid)
        else:
            waiting[2] += 1
        if self._in_flight >= self.max_in_flight or self._holds:
            # Every time, not only on crossing: asyncio's StreamReader may resume reading for its own buffer's
            # sake, and that must not lift our limit.
            self._pause()

    def _acknowledge(self, outcome: asyncio.Future[None]) -> None:
        entry = self._acks_by_future.pop(outcome)
        generation, first_received_ns, unacked, mids = entry[0], entry[1], entry[2], entry[3:]
        self._in_flight -= len(mids) + unacked
        if self._in_flight == 0:
            self._idle.set()
        failed = outcome.cancelled() or outcome.exception() is not None
        if failed:
            # Never acknowledge what was not stored: the broker redelivers it on the next session.
            log.error("%d messages not acknowledged: %s", len(mids), "cancelled" if outcome.cancelled()
                      else outcome.exception())
        elif mids and generation == self._generation and self._client is not None and self.connected:
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

    @staticmethod
    def _client_transport(client: Client | None) -> asyncio.Transport | None:
        connection = client._connection if client is not None else None
        protocol = getattr(connection, "_protocol", None)
        return getattr(protocol, "_transport", None)

    def _transport(self) -> asyncio.Transport | None:
        return self._client_transport(self._client)

    def _pause(self) -> None:
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
            self._paused = True
            if self._pause_keeper is None and self._keepalive_s:
                self._keep_alive_while_paused()

    def _resume(self) -> None:
        if self._closing:
            return  # a closing subscriber reads nothing more: it would not acknowledge it
        self._paused = False
        self._stop_pause_keeper()
        transport = self._transport()
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _keep_alive_while_paused(self) -> None:
        """While paused, tell gmqtt's keepalive check that the peer is not silent: we are not listening."""
        self._pause_keeper = None
        if not self._paused:
            return
        connection = self._client._connection if self._client is not None else None
        if connection is not None and not connection.is_closing():
            connection._last_data_in = time.monotonic()
        self._pause_keeper = asyncio.get_running_loop().call_later(self._keepalive_s / 4, self._keep_alive_while_paused)

    def _stop_pause_keeper(self) -> None:
        if self._pause_keeper is not None:
            self._pause_keeper.cancel()
            self._pause_keeper = None

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
        # Stop reading first: whatever the broker sends from now on stays in its session for the next start.
        self._pause()
        self._closing = True
        self._lost.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._client is not None:
            # Let in-flight messages reach storage so their PUBACKs go out before we leave.
            if not await self.wait_idle(drain_timeout_s):
                log.error("closing: %d messages still not stored after %.0fs; the broker will redeliver them",
                          self._in_flight, drain_timeout_s)
            self._stop_pause_keeper()
            with contextlib.suppress(Exception):
                # DISCONNECT after the last PUBACK (same socket, written in order): the broker keeps the
                # session and redelivers only what we did not acknowledge.
                if not await self._disconnect_lingering():
                    await self._client.disconnect()
        self._connected.clear()
        MQTT_CONNECTED.set(0)
        self._closed.set()

    async def _disconnect_lingering(self, linger_s: float = 5.0) -> bool:
        """Send DISCONNECT, half-close, and read (discarding) until the broker closes its side.

        Closing a socket whose receive buffer still holds unread data (reading is paused, the broker kept
        sending) makes the kernel reset the connection and drop what we wrote but the broker had not read yet:
        the last PUBACKs, then redelivered as duplicates. What is discarded here was never processed nor
        acknowledged, so the broker keeps it in our session. False when gmqtt's internals are not as expected."""
        client = self._client
        connection = getattr(client, "_connection", None)
        transport = self._transport()
        if client is None or connection is None or transport is None or transport.is_closing():
            return False
        closed = asyncio.get_running_loop().create_future()
        client._is_active = False  # gmqtt: no reconnect of its own
        client._connack_received.clear()
        client._connection_lost.set()
        keepalive = getattr(connection, "_keep_connection_callback", None)
        if keepalive is not None:
            keepalive.cancel()  # no PINGREQ after DISCONNECT
        connection.send_disconnect(reason_code=0)
        transport.set_protocol(_DiscardUntilClosed(closed))
        if transport.can_write_eof():
            transport.write_eof()  # FIN after everything written so far
        transport.resume_reading()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), linger_s)
        transport.close()
        return True

    async def wait_closed(self) -> None:
        await self._closed.wait()


class _DiscardUntilClosed(asyncio.Protocol):
    """The protocol of a closing connection: drops what arrives (never acknowledged), notes when it ends."""

    def __init__(self, closed: asyncio.Future[None]) -> None:
        self._closed = closed

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
