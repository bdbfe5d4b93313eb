"""The MQTT transport: subscribe at QoS 1 with a persistent session and acknowledge only after storage.

It knows nothing about payloads: each message is handed, as bytes, to an injected handler coroutine; the
PUBACK is sent when that coroutine returns, i.e. once the message's data (or its quarantine record) is
durable. Why gmqtt (see README "Choosing the MQTT client"): on MQTT 5 with `optimistic_acknowledgement=False`
it sends the PUBACK from the handler's return value, and it received ~21,000 QoS 1 msg/s here, where paho's
manual ack reached ~13,600 and aiomqtt cannot acknowledge after processing at all.

Backpressure is the broker's: MQTT 5 `Receive Maximum` caps the unacknowledged messages in flight to us,
so a stalled sink stops delivery instead of growing a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from gmqtt import Client, Subscription
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

__all__ = ["MQTTv50", "MQTTv311", "MessageHandler", "MqttEndpoint", "MqttSubscriber"]

from collectors.metrics import MQTT_CONNECTED, PENDING_MESSAGES

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, int], Awaitable[None]]
"""handler(topic, payload, received_ns): returns once the message is durably handled (stored or quarantined)."""

# MQTT 5 PUBACK reason codes
SUCCESS = 0
UNSPECIFIED_ERROR = 0x80


@dataclass(slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:  # never show the password
        return f"MqttEndpoint({self.host}:{self.port}, user={self.username!r}, tls={self.tls})"


class MqttSubscriber:
    """`async with MqttSubscriber(...) as sub: await sub.wait_closed()` — delivery runs in gmqtt's tasks.

    `close()` stops taking new work, waits for the in-flight handlers (so their PUBACKs go out), then
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
        self._receive_maximum = receive_maximum
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        self._reconnect_delay_s = reconnect_delay_s
        # MQTT 3.1.1 has no way to hold the PUBACK in gmqtt (it acks on receipt): only the embedded demo
        # broker (amqtt, 3.1.1 only) uses it; production brokers speak MQTT 5.
        self.protocol_version = protocol_version
        self._client: Client | None = None
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __aenter__(self) -> MqttSubscriber:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _make_client(self) -> Client:
        client = Client(
            self.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            receive_maximum=self._receive_maximum,
            session_expiry_interval=self._session_expiry_s,
        )
        client.set_config({"reconnect_retries": -1, "reconnect_delay": self._reconnect_delay_s})
        if self.endpoint.username:
            client.set_auth_credentials(self.endpoint.username, self.endpoint.password)
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        return client

    async def start(self, *, connect_timeout_s: float | None = None) -> None:
        """Connect (retrying until the broker answers, or `connect_timeout_s`) and subscribe."""
        deadline = None if connect_timeout_s is None else time.monotonic() + connect_timeout_s
        while True:
            client = self._make_client()
            try:
                await client.connect(
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=ssl.create_default_context() if self.endpoint.tls else False,
                    keepalive=self._keepalive_s,
                    version=self.protocol_version,
                )
                break
            except Exception as exc:  # refused, unreachable, bad credentials: report and retry
                self.last_error = f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: {exc}"
                log.warning("%s; retrying in %.1fs", self.last_error, self._reconnect_delay_s)
                with contextlib.suppress(Exception):
                    await client.disconnect()
                if deadline is not None and time.monotonic() > deadline:
                    raise ConnectionError(self.last_error) from None
                await asyncio.sleep(self._reconnect_delay_s)
        self._client = client

    def _on_connect(self, client: Client, flags: Any, rc: int, properties: Any) -> None:
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

    async def _on_message(self, client: Client, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        if self._closed.is_set():
            # Shutting down: never acknowledge what we will not store; the broker redelivers it next session.
            await asyncio.Event().wait()
        self._in_flight += 1
        self._idle.clear()
        PENDING_MESSAGES.inc()
        try:
            await self._handler(topic, payload, time.time_ns())
            return SUCCESS
        finally:
            self._in_flight -= 1
            PENDING_MESSAGES.dec()
            if self._in_flight == 0:
                self._idle.set()

    async def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no handler is running (every received message acknowledged)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def close(self, *, drain_timeout_s: float = 30.0) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._client is None:
            return
        # Let running handlers finish (the sink flush resolves them) so their PUBACKs go out before we leave.
        await self.wait_idle(drain_timeout_s)
        with contextlib.suppress(Exception):
            await self._client.disconnect()
        self._connected.clear()
        MQTT_CONNECTED.set(0)

    async def wait_closed(self) -> None:
        await self._closed.wait()
