"""The real MQTT client behind the seam: gmqtt, with this module reaching into its internals on purpose.

Why (see README "Choosing the MQTT client"): gmqtt 0.8 speaks MQTT 5 on asyncio and received ~21,000 QoS 1
msg/s here where paho reached ~13,600 and aiomqtt cannot acknowledge after processing at all. Its own "ack
when the handler returns" path costs an asyncio task and a socket write per message and parses every
property, so for PUBLISH packets this client installs its own handler (a lean parse, no task per message,
PUBACKs for a whole batch in one write) and keeps gmqtt for the rest: connecting, keepalive, subscribing.
Once connected it also frames what arrives itself (`_read_packets`, in place of gmqtt's `_read_packet`): a
PUBLISH goes straight to the lean parse, everything else to gmqtt's dispatch as before; gmqtt's framing cost
a packet object and four calls (one a debug log) per message, ~6 µs of the ~60 µs a message costs in all.
gmqtt's reconnect is switched off (it gives up for good on a "permanent" CONNACK refusal): the subscriber
supervises connections. The private hooks used are pinned by the version range in pyproject.toml and covered
by the end-to-end tests.

While reading is paused the broker's PINGRESPs are not read either, and gmqtt would call the peer dead after
two keepalives. A pause is our choice, not the peer's silence, so while paused the connection's "last data
in" is kept fresh (gmqtt still sends PINGREQs, which keeps the broker's side alive), and a dead peer is
detected by the kernel instead: TCP_USER_TIMEOUT drops the connection when what we send (PINGREQs, PUBACKs)
stays unacknowledged for two keepalives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any

from gmqtt import Client, Subscription
from gmqtt.mqtt.constants import MQTTCommands
from gmqtt.mqtt.package import Package

from collectors.transport.client import ClientEvents, ClientSettings, ConnectRefused, MQTTv50

__all__ = ["GmqttClient"]

log = logging.getLogger(__name__)
_MAX_REMAINING_LENGTH_BYTES = 4  # MQTT's variable-byte integer: at most 4 bytes (268,435,455)


def _variable_byte_integer(data: bytes, position: int, end: int) -> tuple[int, int]:
    """MQTT's variable-byte integer at data[position:end]: (its value, the position after it), that position -1
    when the integer is not whole before `end`. More than 4 bytes is malformed: ValueError."""
    value = shift = 0
    while position < end:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift >= 7 * _MAX_REMAINING_LENGTH_BYTES:
            raise ValueError("an MQTT variable-byte integer longer than 4 bytes")
    return value, -1


def _puback(mid: int) -> bytes:
    # Remaining length 2: reason code and properties omitted, which means Success (MQTT 5 §3.4.2.1; 3.1.1 form)
    return bytes((0x40, 0x02, mid >> 8, mid & 0xFF))


class GmqttClient:
    """`MqttClient` on gmqtt: one instance per connection attempt (`GmqttClient(settings, events)`)."""

    def __init__(self, settings: ClientSettings, events: ClientEvents) -> None:
        self._settings = settings
        self._events = events
        self._message = events.on_message  # bound once: called per PUBLISH
        self._v5 = settings.protocol_version >= MQTTv50
        self._keepalive_s = settings.keepalive_s
        self._pause_keeper: asyncio.TimerHandle | None = None
        self._paused = False
        properties: dict[str, Any] = {}
        if settings.max_packet_bytes and self._v5:
            # MQTT 5 Maximum Packet Size: the broker must not send us anything larger (it discards it instead)
            properties["maximum_packet_size"] = settings.max_packet_bytes
        client = Client(
            settings.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            receive_maximum=min(settings.receive_maximum, 65535),
            session_expiry_interval=settings.session_expiry_s,
            **properties,
        )
        if settings.endpoint.username:
            client.set_auth_credentials(settings.endpoint.username, settings.endpoint.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        handler = client._package_handler
        # gmqtt's own reconnect is replaced by the subscriber's supervisor (see the module docstring).
        handler._reconnect_callback = self._gmqtt_lost
        # Our PUBLISH handler replaces gmqtt's (see the module docstring); gmqtt dispatches by command type.
        handler._handler_cache[MQTTCommands.PUBLISH] = self._on_publish_packet
        self._gmqtt_disconnect_handler = handler._handle_disconnect_packet
        handler._handler_cache[MQTTCommands.DISCONNECT] = self._on_disconnect_packet
        self._client = client

    # -- connecting ---------------------------------------------------------------------------------------------

    async def connect(self) -> None:
        endpoint = self._settings.endpoint
        try:
            await self._client.connect(
                endpoint.host,
                endpoint.port,
                ssl=ssl.create_default_context() if endpoint.tls else False,
                keepalive=self._keepalive_s,
                version=self._settings.protocol_version,
            )
        except Exception as exc:
            code = getattr(exc, "_code", None)  # gmqtt's MQTTConnectError: the CONNACK reason code
            if isinstance(code, int):
                raise ConnectRefused(code, str(exc)) from exc
            raise

    def _on_connect(self, client: Client, flags: Any, rc: int, properties: Any) -> None:
        self._paused = False
        self._tune_socket()
        self._frame_packets()
        self._events.on_connected(self, bool(flags))

    def subscribe(self, topics: Sequence[str], *, qos: int, retain_handling: int) -> None:
        # (MQTT 3.1.1, the demo broker, has no subscription options: there the byte is the QoS alone.)
        handling = retain_handling if self._v5 else 0
        self._client.subscribe([Subscription(topic, qos=qos, retain_handling_options=handling) for topic in topics])

    def _tune_socket(self) -> None:
        transport = self._transport()
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or not self._keepalive_s:
            return
        with contextlib.suppress(OSError, AttributeError):
            # Dead-peer detection that works while reading is paused (see the module docstring).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(2 * self._keepalive_s * 1000))

    # -- losing the connection ----------------------------------------------------------------------------------

    async def _gmqtt_lost(self, delay: bool = False) -> None:
        """Installed as gmqtt's reconnect callback: gmqtt found the connection gone; the subscriber reconnects."""
        self._events.on_lost(self)

    def _on_disconnect_packet(self, cmd: int, packet: bytes) -> None:
        """A broker's DISCONNECT carries a reason code; gmqtt's synthetic one (the socket closed) is empty."""
        self._events.on_ending(self, packet[0] if packet else None, self._heartbeat_lost())
        self._gmqtt_disconnect_handler(cmd, packet)

    def _heartbeat_lost(self) -> bool:
        last_in = getattr(self._client._connection, "_last_data_in", None)
        return bool(self._keepalive_s) and last_in is not None and time.monotonic() - last_in >= 2 * self._keepalive_s

    def _on_disconnect(self, client: Client, packet: Any, exc: BaseException | None = None) -> None:
        self._stop_pause_keeper()
        self._events.on_disconnected(self)

    def abandon(self) -> None:
        self._client._is_active = False  # never reconnect on its own
        self._stop_pause_keeper()
        transport = self._transport()
        if transport is not None:
            transport.close()

    # -- receiving ----------------------------------------------------------------------------------------------

    def _frame_packets(self) -> None:
        """Install `_read_packets` as this connection's framing (gmqtt's read loop calls it per chunk read)."""
        connection = self._client._connection
        protocol = getattr(connection, "_protocol", None)
        if protocol is None or not callable(getattr(protocol, "_read_packet", None)):
            return  # not the gmqtt we know: its own framing (slower, same outcome) stays
        handler = self._client._package_handler
        protocol._read_packet = functools.partial(self._read_packets, connection, handler)

    def _read_packets(self, connection: Any, handler: Any, data: bytes) -> int:
        """gmqtt's `_read_packet` contract: dispatch every whole packet in `data`, return the bytes used (-1 for a
        malformed length, which drops the connection). PUBLISH is parsed here; the rest goes to gmqtt."""
        if handler.current_connection is not connection:
            return len(data)  # a superseded connection's leftovers: gmqtt drops them too
        size = len(data)
        parsed = 0
        while size - parsed >= 2:
            # fixed header: the command byte, then the remaining length (variable-byte integer)
            try:
                length, position = _variable_byte_integer(data, parsed + 1, size)
            except ValueError:
                return -1
            if position < 0:
                break  # the header itself is not whole yet
            end = position + length
            if end > size:
                break
            command = data[parsed]
            parsed = end
            try:
                if command >> 4 == 3:  # PUBLISH
                    self._publish(command, data, position, end)
                else:
                    connection.put_package(Package(command, data[position:end]))
            except Exception:  # one bad packet must not end the read loop (gmqtt's dispatch does the same)
                log.exception("MQTT packet 0x%02x could not be handled", command)
        return self._consumed(connection, parsed)

    @staticmethod
    def _consumed(connection: Any, parsed: int) -> int:
        if parsed:
            connection._last_data_in = time.monotonic()  # what gmqtt's keepalive check reads
        return parsed

    def _on_publish_packet(self, cmd: int, raw: bytes) -> None:
        """gmqtt's dispatch of a PUBLISH (before `_read_packets` is installed)."""
        self._publish(cmd, raw, 0, len(raw))

    def _publish(self, cmd: int, raw: bytes, position: int, end: int) -> None:
        """Parse the PUBLISH in raw[position:end] (its variable header and payload) and hand it on."""
        qos = (cmd >> 1) & 0x03
        topic_length = (raw[position] << 8) | raw[position + 1]
        position += 2
        if position + topic_length > end:
            raise ValueError(f"PUBLISH topic length {topic_length} runs past the packet")
        topic = raw[position : position + topic_length].decode("utf-8", errors="replace")
        position += topic_length
        mid = 0
        if qos:
            mid = (raw[position] << 8) | raw[position + 1]
            position += 2
        if self._v5:
            # properties: a variable-byte length, then the properties (we ask for none we need: no topic aliases)
            length, position = _variable_byte_integer(raw, position, end)
            if position < 0 or position + length > end:
                raise ValueError("PUBLISH properties run past the packet")
            position += length
        self._message(topic, raw[position:end], qos, mid)

    def acknowledge(self, mids: Sequence[int]) -> bool:
        connection = self._client._connection
        if connection is None:
            return False
        connection.send_package(b"".join(_puback(mid) for mid in mids))
        return True

    # -- flow control -------------------------------------------------------------------------------------------

    def _transport(self) -> asyncio.Transport | None:
        protocol = getattr(self._client._connection, "_protocol", None)
        return getattr(protocol, "_transport", None)

    def pause_reading(self) -> bool:
        transport = self._transport()
        if transport is None or transport.is_closing():
            return False
        transport.pause_reading()
        self._paused = True
        if self._pause_keeper is None and self._keepalive_s:
            self._keep_alive_while_paused()
        return True

    def resume_reading(self) -> None:
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
        connection = self._client._connection
        if connection is not None and not connection.is_closing():
            connection._last_data_in = time.monotonic()
        self._pause_keeper = asyncio.get_running_loop().call_later(self._keepalive_s / 4, self._keep_alive_while_paused)

    def _stop_pause_keeper(self) -> None:
        if self._pause_keeper is not None:
            self._pause_keeper.cancel()
            self._pause_keeper = None

    # -- stopping -----------------------------------------------------------------------------------------------

    async def disconnect(self) -> None:
        self._stop_pause_keeper()
        if not await self._disconnect_lingering():
            await self._client.disconnect()

    async def _disconnect_lingering(self, linger_s: float = 5.0) -> bool:
        """Send DISCONNECT, half-close, and read (discarding) until the broker closes its side.

        Closing a socket whose receive buffer still holds unread data (reading is paused, the broker kept
        sending) makes the kernel reset the connection and drop what we wrote but the broker had not read yet:
        the last PUBACKs, then redelivered as duplicates. What is discarded here was never processed nor
        acknowledged, so the broker keeps it in our session. False when gmqtt's internals are not as expected."""
        client = self._client
        connection = getattr(client, "_connection", None)
        transport = self._transport()
        if connection is None or transport is None or transport.is_closing():
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
