"""The seam between the subscriber and an MQTT client: what `MqttSubscriber` asks of a client, and what it is told.

`MqttSubscriber` owns the guarantees (acknowledge only after the outcome is durable, bounded in flight,
reconnect forever, resubscribe after a lost session, DISCONNECT after the last PUBACK); a client only moves
packets. Two implementations: `gmqtt_client.GmqttClient` (the real one, with the measured fast path) and
`fake.FakeBroker`'s clients (in-process, no socket, for unit tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ClientEvents", "ClientFactory", "ClientSettings", "ConnectRefused", "MQTTv50", "MQTTv311",
           "MqttClient", "MqttEndpoint"]


MQTTv311 = 4  # the protocol level byte of CONNECT (the same values as gmqtt's constants)
MQTTv50 = 5


@dataclass(slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:  # never show the password
        return f"MqttEndpoint({self.host}:{self.port}, user={self.username!r}, tls={self.tls})"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """One connection's parameters: a persistent session (clean start off) for `client_id`."""

    endpoint: MqttEndpoint
    client_id: str
    receive_maximum: int
    session_expiry_s: int
    keepalive_s: int
    protocol_version: int = MQTTv50
    max_packet_bytes: int | None = None  # MQTT 5 Maximum Packet Size asked of the broker


class ConnectRefused(ConnectionError):
    """The broker answered CONNECT with a non-zero CONNACK reason code (e.g. 0x87 not authorised)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class ClientEvents(Protocol):
    """What a client tells the subscriber, always on the event loop, with the client it concerns."""

    def on_connected(self, client: MqttClient, session_present: bool) -> None:
        """CONNACK 0 arrived (before `connect()` returns)."""

    def on_message(self, topic: str, payload: bytes, qos: int, mid: int) -> None:
        """A PUBLISH arrived (the hot path: called once per message, `mid` 0 for QoS 0)."""

    def on_ending(self, client: MqttClient, reason_code: int | None, keepalive_expired: bool) -> None:
        """The connection is ending: the broker's DISCONNECT reason code, or None when the socket closed
        (`keepalive_expired`: nothing came from the broker for two keepalives)."""

    def on_disconnected(self, client: MqttClient) -> None:
        """The connection is gone (after `on_ending`, and also after our own `disconnect()`)."""

    def on_lost(self, client: MqttClient) -> None:
        """The client will not come back by itself: the subscriber decides when to connect again."""


class MqttClient(Protocol):
    """One connection attempt's client. It never reconnects on its own; it acknowledges only when told to."""

    async def connect(self) -> None:
        """Connect and wait for CONNACK: raises `ConnectRefused` for a refusal, OSError/other for the rest."""

    def subscribe(self, topics: Sequence[str], *, qos: int, retain_handling: int) -> None:
        """SUBSCRIBE (MQTT 5 retain handling option; ignored for 3.1.1)."""

    def acknowledge(self, mids: Sequence[int]) -> bool:
        """PUBACK each packet id, in one write; False when there is no connection to write on."""

    def pause_reading(self) -> bool:
        """Stop reading from the broker (TCP backpressure); False when there is no open connection."""

    def resume_reading(self) -> None:
        """Read again."""

    async def disconnect(self) -> None:
        """DISCONNECT after everything written so far (the session is kept), then close."""

    def abandon(self) -> None:
        """Superseded or failed: never reconnect, close whatever is open, no DISCONNECT."""


ClientFactory = Callable[[ClientSettings, ClientEvents], MqttClient]
"""factory(settings, events) -> a new client for one connection attempt."""
