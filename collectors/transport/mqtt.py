"""The MQTT transport: subscribe at QoS 1 with a persistent session and acknowledge only after storage.

It knows nothing about payloads: each message is handed, as bytes, to an injected handler that returns the
future of its durable outcome (stored, or quarantined); the PUBACK is sent when that future resolves.

The subscriber talks to the broker through a client seam (`client.MqttClient`): the real client is gmqtt
with a measured fast path (`gmqtt_client.GmqttClient`, which explains why it reaches into gmqtt), and unit
tests drive the subscriber with an in-process fake (`fake.FakeBroker`). The guarantees live here, not in
the client.

Flow control is explicit: past `max_in_flight` unacknowledged messages the socket stops being read (TCP
backpressure: the broker queues for us, its session keeps them), and reading resumes at half that. The
broker's own Receive Maximum is requested too, but Mosquitto 2.0 was measured exceeding it.

Connections are supervised here, not by the client (gmqtt's reconnect gives up for good on a "permanent"
CONNACK refusal such as 0x87, although an operator fixing the broker's ACL makes it succeed a minute later):
every loss or refusal is retried forever with capped exponential backoff and jitter, and the reason (refused
with code, unreachable, session taken over by another client, keepalive lost) is kept for `/healthz` and
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

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
from collectors.transport.client import (
    ClientFactory,
    ClientSettings,
    ConnectRefused,
    MqttClient,
    MqttEndpoint,
    MQTTv50,
    MQTTv311,
)
from collectors.transport.gmqtt_client import GmqttClient

__all__ = ["MQTTv50", "MQTTv311", "MessageHandler", "MqttEndpoint", "MqttSubscriber"]

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, int], "asyncio.Future[None]"]
"""handler(topic, payload, received_ns) -> the future of the message's durable outcome (never raises)."""

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


class MqttSubscriber:
    """`async with MqttSubscriber(...)`: receives, hands each message to `handler`, acknowledges when durable.

    `close()` stops reading (nothing is taken that will not be acknowledged), waits for what is in flight (so
    its PUBACKs go out), then sends DISCONNECT, keeping the broker-side session so nothing unacknowledged is
    lost. `client_factory` makes the client of each connection attempt (default: gmqtt).
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
        client_factory: ClientFactory = GmqttClient,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.topics = topics
        self._handler = handler
        self.max_in_flight = receive_maximum
        self._keepalive_s = keepalive_s
        self._backoff = Backoff(reconnect_delay_s, reconnect_max_delay_s)
        # Exists once we held a session at this broker: a later "no session" then means the broker lost it.
        self._session_marker = session_marker
        # MQTT 3.1.1 is only for the embedded demo broker (amqtt speaks nothing newer); production is MQTT 5.
        self.protocol_version = protocol_version
        self._settings = ClientSettings(
            endpoint, client_id, receive_maximum=receive_maximum, session_expiry_s=session_expiry_s,
            keepalive_s=keepalive_s, protocol_version=protocol_version, max_packet_bytes=max_packet_bytes,
        )
        self._client_factory = client_factory
        self._client: MqttClient | None = None
        self._up_client: MqttClient | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
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
            previous.abandon()  # a superseded client must never reconnect on its own
        client = self._client_factory(self._settings, self)
        self._client = client
        try:
            await asyncio.wait_for(client.connect(), timeout=max(10.0, 2.0 * self._keepalive_s))
        except Exception as exc:  # refused, unreachable, bad credentials: report and retry, never give up
            if isinstance(exc, ConnectRefused):
                self.reason = "connect_refused"
                MQTT_CONNECT_REFUSED.labels(code=hex(exc.code)).inc()
                MQTT_CONNECT_ATTEMPTS.labels(outcome="refused").inc()
            else:
                self.reason = "unreachable"
                MQTT_CONNECT_ATTEMPTS.labels(outcome="unreachable").inc()
            detail = str(exc) or type(exc).__name__
            self.last_error = f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: {detail}"
            log.warning("%s (as client id %r); will retry", self.last_error, self.client_id)
            client.abandon()
            return False
        if self._up_client is not client:  # CONNACK 0 arrived but `on_connected` did not run: treat as a failure
            return False
        MQTT_CONNECT_ATTEMPTS.labels(outcome="ok").inc()
        self._backoff.reset()
        return True

    def on_lost(self, client: MqttClient) -> None:
        """The client found the connection gone; our supervisor reconnects."""
        if client is self._up_client:
            self._up_client = None
            self._lost.set()

    def on_ending(self, client: MqttClient, reason_code: int | None, keepalive_expired: bool) -> None:
        """Say why the connection ended: the broker's DISCONNECT reason code, or none when the socket closed:
        then either the keepalive expired, or the broker closed the socket."""
        if self._up_client is not None and not self._closing:
            if reason_code is not None:
                if reason_code == SESSION_TAKEN_OVER:
                    self._taken_over("the broker said another connection took over our session (0x8E)")
                else:
                    self._disconnected("disconnected_by_broker", f"the broker sent DISCONNECT {hex(reason_code)}")
            elif keepalive_expired:
                self._disconnected("keepalive_timeout", f"no answer from the broker for {2 * self._keepalive_s}s")
            else:
                # Mosquitto 2.0 closes the old connection of a taken-over session without a DISCONNECT; a broker
                # shutting down or an administrator's kick looks the same from here.
                self._disconnected(
                    "closed_by_broker",
                    f"the broker closed our connection: another client using our client id {self.client_id!r} "
                    "(session takeover), a broker restart, or an administrator",
                )

    def _taken_over(self, detail: str) -> None:
        self.takeovers += 1
        MQTT_SESSION_TAKEN_OVER.inc()
        self._disconnected("session_taken_over", f"{detail}: messages for client id {self.client_id!r} went to it")

    def _disconnected(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.last_error = detail
        MQTT_DISCONNECTS.labels(reason=reason).inc()
        log.warning("MQTT connection lost (%s): %s; reconnecting with backoff", reason, detail)

    def on_connected(self, client: MqttClient, session_present: bool) -> None:
        if self._client is None or client is not self._client:  # a superseded attempt's late CONNACK
            return
        self._generation += 1
        self._up_client = client
        self._paused = False
        self._connected.set()
        self.last_error = None
        self.reason = None
        MQTT_CONNECTED.set(1)
        self.session_present = session_present
        had_session = self._generation > 1 or (self._session_marker is not None and self._session_marker.exists())
        if not session_present and had_session:
            # Whatever was queued for us (and not yet delivered) is gone: the broker restarted without its
            # persistence, or the session expired (session_expiry_s) while we were away.
            self.sessions_lost += 1
            MQTT_SESSION_LOST.inc()
            log.error("broker lost our session (client id %r): messages it held for us while we were away are "
                      "gone; resubscribing now", self.client_id)
        # Subscribing on every (re)connect is harmless with a persistent session and repairs a lost one.
        # Retained messages are sent only for a new subscription, so a reconnect or restart does not ingest
        # them again; after a lost session they come once more (at-least-once, see the README).
        client.subscribe(self.topics, qos=1, retain_handling=RETAIN_ONLY_FOR_NEW_SUBSCRIPTION)
        if self._session_marker is not None and not self._session_marker.exists():
            with contextlib.suppress(OSError):
                self._session_marker.write_text(f"{self.client_id}\n")

    def on_disconnected(self, client: MqttClient) -> None:
        if client is not self._client:
            return
        self._connected.clear()
        MQTT_CONNECTED.set(0)

    # -- receiving ----------------------------------------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, qos: int, mid: int) -> None:
        if self._closing:
            return  # not acknowledged: the broker redelivers it to our next session
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
        elif (mids and generation == self._generation and self._client is not None and self.connected
              and self._client.acknowledge(mids)):
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

    def _pause(self) -> None:
        if self._client is not None and self._client.pause_reading():
            self._paused = True

    def _resume(self) -> None:
        if self._closing:
            return  # a closing subscriber reads nothing more: it would not acknowledge it
        self._paused = False
        if self._client is not None:
            self._client.resume_reading()

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
            with contextlib.suppress(Exception):
                # DISCONNECT after the last PUBACK (same socket, written in order): the broker keeps the
                # session and redelivers only what we did not acknowledge.
                await self._client.disconnect()
        self._connected.clear()
        MQTT_CONNECTED.set(0)
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
