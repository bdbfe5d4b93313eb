"""An in-process MQTT broker behind the client seam: no socket, no thread, scripted by the test, recording
every packet the subscriber sends, in order.

    broker = FakeBroker()
    subscriber = MqttSubscriber(endpoint, client_id=..., topics=["t/#"], handler=..., client_factory=broker.client)
    broker.refuse(0x87, times=3)          # CONNACK 0x87 three times, then accept
    broker.publish("t/a", b"{}")          # queued in the session, delivered while the client reads
    broker.drop()                         # the socket closes (or drop(0x8E): a DISCONNECT with a reason code)
    broker.lose_session()                 # the next CONNACK says session present = 0
    broker.packets                        # [("CONNECT", id), ("SUBSCRIBE", (topics, handling)), ("PUBACK", mid), ...]

Like a broker, it keeps one persistent session (subscriptions, messages queued, messages sent but not
acknowledged, which are sent again, same packet id, on the next connection), keeps retained messages and
honours MQTT 5 retain handling. Like Mosquitto 2.0 it does not hold back for the client's Receive Maximum:
the subscriber's own bound is what limits what is in flight. Delivery happens on the event loop (`call_soon`),
one message at a time, and stops the moment the client pauses reading.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from collectors.transport.client import ClientEvents, ClientSettings, ConnectRefused

__all__ = ["FakeBroker", "FakeClient", "FakeMessage"]


@dataclass(slots=True)
class FakeMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    mid: int = 0  # set when first sent (QoS 1)
    dup: bool = False  # sent again on a later connection


@dataclass(slots=True)
class _Session:
    subscriptions: set[str] = field(default_factory=set)
    queued: deque[FakeMessage] = field(default_factory=deque)
    read_ahead: deque[FakeMessage] = field(default_factory=deque)  # in the client's buffer: pausing is too late
    unacked: dict[int, FakeMessage] = field(default_factory=dict)  # sent, not acknowledged, by packet id
    next_mid: int = 1

    def take_mid(self) -> int:
        mid = self.next_mid
        self.next_mid = mid % 65535 + 1
        return mid


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (`+` one level, `#` the rest)."""
    levels, wanted = topic.split("/"), topic_filter.split("/")
    for i, part in enumerate(wanted):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(levels) == len(wanted)


class FakeBroker:
    """The broker side for one client id. `client` is the subscriber's `client_factory`."""

    def __init__(self) -> None:
        self.packets: list[tuple[str, Any]] = []  # what clients sent, in order
        self.clients: list[FakeClient] = []
        self.delivered: list[FakeMessage] = []  # every PUBLISH sent to a client, redeliveries included
        self.acked: list[FakeMessage] = []  # acknowledged by PUBACK, in order
        self.stray_acks: list[int] = []  # PUBACKs for packet ids the session does not hold
        self.retained: dict[str, FakeMessage] = {}
        self._refusals: deque[int] = deque()
        self._unreachable = 0
        self._session: _Session | None = None
        self._up: FakeClient | None = None
        self._pump_scheduled = False

    # -- the test's script --------------------------------------------------------------------------------------

    def client(self, settings: ClientSettings, events: ClientEvents) -> FakeClient:
        client = FakeClient(self, settings, events)
        self.clients.append(client)
        return client

    def refuse(self, code: int, times: int = 1) -> None:
        """Answer the next `times` CONNECTs with CONNACK `code`."""
        self._refusals.extend([code] * times)

    def accept(self) -> None:
        """Accept the next CONNECT, whatever refusals were scripted."""
        self._refusals.clear()

    def unreachable(self, times: int = 1) -> None:
        """Fail the next `times` connection attempts as if nothing listened (connection refused)."""
        self._unreachable += times

    def lose_session(self) -> None:
        """Forget the session (a broker restarted without persistence): the next CONNACK says no session."""
        self._session = None

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                already_read: bool = False) -> None:
        """Route a message to the session. `already_read`: it reaches the client even if reading is paused, as
        a real client still handles what it had read from the socket before pausing."""
        if retain:
            self.retained[topic] = FakeMessage(topic, payload, qos, retain=True)
        session = self._session
        if session is not None and any(topic_matches(f, topic) for f in session.subscriptions):
            (session.read_ahead if already_read else session.queued).append(FakeMessage(topic, payload, qos))
            self._schedule_pump()

    def drop(self, reason_code: int | None = None, *, keepalive_expired: bool = False) -> None:
        """End the live connection: a DISCONNECT with `reason_code` (e.g. 0x8E takeover) or, for None, the socket
        closing. As with gmqtt, the client hears `on_ending`, `on_disconnected`, then (later) `on_lost`."""
        client = self._up
        assert client is not None, "no live connection to drop"
        self._detach(client)
        client._events.on_ending(client, reason_code, keepalive_expired)
        client._events.on_disconnected(client)
        asyncio.get_running_loop().call_soon(client._events.on_lost, client)

    @property
    def connected(self) -> FakeClient | None:
        return self._up

    @property
    def session_subscriptions(self) -> set[str]:
        return set(self._session.subscriptions) if self._session else set()

    @property
    def unacked(self) -> list[FakeMessage]:
        """Held in the session: sent and not acknowledged, then queued (what a reconnect gets)."""
        if self._session is None:
            return []
        return [*self._session.unacked.values(), *self._session.queued]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.packets]

    # -- what the clients do ------------------------------------------------------------------------------------

    def _connect(self, client: FakeClient) -> bool:
        self.packets.append(("CONNECT", client.settings.client_id))
        if self._unreachable:
            self._unreachable -= 1
            raise ConnectionRefusedError(111, "Connect call failed (fake broker unreachable)")
        if self._refusals:
            code = self._refusals.popleft()
            raise ConnectRefused(code, f"code {code} (refused by the fake broker)")
        if self._up is not None:  # a second connection with our client id takes the session over
            self.drop(0x8E)
        session_present = self._session is not None
        if self._session is None:
            self._session = _Session()
        for message in self._session.unacked.values():  # sent again first, same packet id
            message.dup = True
        self._up = client
        return session_present

    def _subscribe(self, client: FakeClient, topics: Sequence[str], retain_handling: int) -> None:
        self.packets.append(("SUBSCRIBE", (tuple(topics), retain_handling)))
        session = self._session
        if client is not self._up or session is None:
            return
        for topic_filter in topics:
            new = topic_filter not in session.subscriptions
            session.subscriptions.add(topic_filter)
            if retain_handling == 0 or (retain_handling == 1 and new):
                session.queued.extend(
                    FakeMessage(m.topic, m.payload, m.qos, retain=True)
                    for m in self.retained.values() if topic_matches(topic_filter, m.topic)
                )
        self._schedule_pump()

    def _puback(self, client: FakeClient, mids: Sequence[int]) -> None:
        if client is not self._up:
            return  # written on a dead connection: the broker never reads it
        for mid in mids:
            self.packets.append(("PUBACK", mid))
            message = self._session.unacked.pop(mid, None) if self._session else None
            if message is None:
                self.stray_acks.append(mid)
            else:
                self.acked.append(message)

    def _disconnect(self, client: FakeClient, *, graceful: bool) -> None:
        if client is self._up:
            self.packets.append(("DISCONNECT" if graceful else "CLOSE", None))
            self._detach(client)

    def _detach(self, client: FakeClient) -> None:
        client.open = False
        if client is self._up:
            self._up = None
            if self._session is not None:  # what the closed socket held goes back to the queue's head
                self._session.queued.extendleft(reversed(self._session.read_ahead))
                self._session.read_ahead.clear()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        while (client := self._up) is not None and (message := self._next_to_send(client)) is not None:
            self.delivered.append(message)
            client._events.on_message(message.topic, message.payload, message.qos, message.mid)

    def _next_to_send(self, client: FakeClient) -> FakeMessage | None:
        """What the reading client gets next: what it had read already, then (unless paused) the session's
        unacknowledged messages again (same packet id), then the queue."""
        session = self._session
        if session is None:
            return None
        if session.read_ahead:
            message = session.read_ahead.popleft()
        elif client.paused:
            return None
        elif (resend := next((m for m in session.unacked.values() if m.dup), None)) is not None:
            resend.dup = False  # marked again only by the next connection
            return resend
        elif session.queued:
            message = session.queued.popleft()
        else:
            return None
        if message.qos:
            message.mid = session.take_mid()
            session.unacked[message.mid] = message
        return message


class FakeClient:
    """`MqttClient` on a `FakeBroker`: one per connection attempt, as the seam asks."""

    def __init__(self, broker: FakeBroker, settings: ClientSettings, events: ClientEvents) -> None:
        self.settings = settings
        self._broker = broker
        self._events = events
        self.open = False
        self.paused = False
        self.abandoned = False

    async def connect(self) -> None:
        await asyncio.sleep(0)  # a real connect yields to the loop
        session_present = self._broker._connect(self)
        self.open = True
        self._events.on_connected(self, session_present)
        self._broker._schedule_pump()

    def subscribe(self, topics: Sequence[str], *, qos: int, retain_handling: int) -> None:
        self._broker._subscribe(self, topics, retain_handling)

    def acknowledge(self, mids: Sequence[int]) -> bool:
        if not self.open:
            return False
        self._broker._puback(self, mids)
        return True

    def pause_reading(self) -> bool:
        if not self.open:
            return False
        self.paused = True
        return True

    def resume_reading(self) -> None:
        self.paused = False
        if self.open:
            self._broker._schedule_pump()

    async def disconnect(self) -> None:
        self._broker._disconnect(self, graceful=True)

    def abandon(self) -> None:
        self.abandoned = True
        self._broker._disconnect(self, graceful=False)
