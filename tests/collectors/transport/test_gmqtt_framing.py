"""The real client's own packet framing (`GmqttClient._read_packets`, in place of gmqtt's): whatever way the
socket cuts the stream, every PUBLISH reaches the subscriber once and whole, every other packet reaches gmqtt's
dispatch, a malformed length drops the connection, and one bad packet does not stop the ones after it.
(End to end against Mosquitto: tests/collectors/transport/test_transport.py and the bench.)"""

from __future__ import annotations

from typing import Any

import pytest

from collectors.transport.client import ClientSettings, MqttClient, MqttEndpoint, MQTTv50, MQTTv311
from collectors.transport.gmqtt_client import GmqttClient


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish(topic: str, payload: bytes, *, qos: int, mid: int, v5: bool, properties: bytes = b"") -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t
    if qos:
        body += mid.to_bytes(2, "big")
    if v5:
        body += _varint(len(properties)) + properties
    body += payload
    return bytes((0x30 | (qos << 1),)) + _varint(len(body)) + body


class _Events:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, int, int]] = []
        self.fail_on: bytes | None = None

    def on_message(self, topic: str, payload: bytes, qos: int, mid: int) -> None:
        if payload == self.fail_on:
            raise RuntimeError("a handler bug")
        self.messages.append((topic, payload, qos, mid))

    def on_connected(self, client: MqttClient, session_present: bool) -> None: ...
    def on_ending(self, client: MqttClient, reason_code: int | None, keepalive_expired: bool) -> None: ...
    def on_disconnected(self, client: MqttClient) -> None: ...
    def on_lost(self, client: MqttClient) -> None: ...


class _Connection:
    """What `_read_packets` uses of gmqtt's MQTTConnection: `put_package` and the keepalive's `_last_data_in`."""

    def __init__(self) -> None:
        self.packages: list[tuple[int, bytes]] = []
        self._last_data_in = 0.0

    def put_package(self, package: Any) -> None:
        self.packages.append((package.cmd, package.data))


class _Handler:
    def __init__(self, connection: _Connection | None) -> None:
        self.current_connection = connection


def _client(events: _Events, version: int) -> GmqttClient:
    settings = ClientSettings(MqttEndpoint("127.0.0.1", 1), "framing-test", 100, 60, 30, protocol_version=version)
    return GmqttClient(settings, events)  # type: ignore[arg-type]  # only on_message is used here


def _feed(client: GmqttClient, connection: _Connection, chunks: list[bytes]) -> int:
    """gmqtt's read loop: append each chunk to the buffer, frame, keep what was not used."""
    handler = _Handler(connection)
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        used = client._read_packets(connection, handler, buffer)
        if used == -1:
            return -1
        buffer = buffer[used:]
    return len(buffer)


@pytest.mark.parametrize("version", [MQTTv50, MQTTv311])
def test_every_cut_of_the_stream_delivers_each_publish_once_and_whole(version: int) -> None:
    v5 = version == MQTTv50
    big = bytes(range(256)) * 600  # 153,600 bytes: a 3-byte remaining length
    packets = [
        _publish("nakhon/bkk/air/a1/up", b'{"pm25_ugm3": 10}', qos=1, mid=1, v5=v5),
        bytes((0xD0, 0x00)),  # PINGRESP: gmqtt's
        _publish("nakhon/bkk/air/a2/up", big, qos=1, mid=65535, v5=v5, properties=b"\x01\x01" if v5 else b""),
        _publish("nakhon/ภูเก็ต/flood/f1/up", b"", qos=0, mid=0, v5=v5),
        bytes((0x90, 0x03, 0x00, 0x05, 0x00)) if v5 else bytes((0x90, 0x03, 0x00, 0x05, 0x01)),  # SUBACK
    ]
    expected = [
        ("nakhon/bkk/air/a1/up", b'{"pm25_ugm3": 10}', 1, 1),
        ("nakhon/bkk/air/a2/up", big, 1, 65535),
        ("nakhon/ภูเก็ต/flood/f1/up", b"", 0, 0),
    ]
    stream = b"".join(packets)
    cuts = sorted({1, 2, 3, 5, 20, 21, 22, 23, 24, 25, 40, 1000, 70000, len(stream) - 6, len(stream) - 3,
                   len(stream) - 1})
    for cut in cuts:
        events, connection = _Events(), _Connection()
        left = _feed(_client(events, version), connection, [stream[:cut], stream[cut:]])
        assert left == 0, cut
        assert events.messages == expected, cut
        assert connection.packages == [(0xD0, b""), (0x90, packets[4][2:])], cut
        assert connection._last_data_in > 0
    # byte by byte (the worst the socket can do)
    events, connection = _Events(), _Connection()
    small = b"".join(p for p in packets if len(p) < 1000)
    assert _feed(_client(events, version), connection, [small[i : i + 1] for i in range(len(small))]) == 0
    assert events.messages == [expected[0], expected[2]]


def test_a_remaining_length_longer_than_four_bytes_drops_the_connection() -> None:
    events, connection = _Events(), _Connection()
    assert _feed(_client(events, MQTTv50), connection, [bytes((0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01)) + b"x" * 10]) == -1
    assert events.messages == []


def test_a_packet_that_fails_is_logged_and_the_ones_after_it_still_arrive(caplog: pytest.LogCaptureFixture) -> None:
    events, connection = _Events(), _Connection()
    events.fail_on = b"boom"
    truncated = bytes((0x32, 0x03, 0x00, 0x09, 0x61))  # topic length 9 in a 3-byte packet
    # properties length 9 (then 1 byte) in a packet that ends first
    short_properties = bytes((0x32, 0x07, 0x00, 0x01, 0x74, 0x00, 0x01, 0x09, 0x01))
    stream = (_publish("t/1", b"boom", qos=1, mid=7, v5=True) + truncated + short_properties
              + _publish("t/2", b"ok", qos=1, mid=8, v5=True))
    assert _feed(_client(events, MQTTv50), connection, [stream]) == 0
    assert events.messages == [("t/2", b"ok", 1, 8)]
    assert caplog.text.count("could not be handled") == 3


def test_a_superseded_connections_leftovers_are_dropped_not_delivered() -> None:
    events, connection = _Events(), _Connection()
    client = _client(events, MQTTv50)
    stream = _publish("t/1", b"late", qos=1, mid=1, v5=True)
    assert client._read_packets(connection, _Handler(_Connection()), stream) == len(stream)
    assert events.messages == []
