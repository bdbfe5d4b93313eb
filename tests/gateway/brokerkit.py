"""Shared by the tests on a real dynamic-security Mosquitto: accounts, an MQTT client that reports reason
codes, the gateway as the tests drive it, and the `broker` / `gateway` fixtures (registered in conftest.py)."""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.broker import MosquittoProvisioner
from gateway.registry import RegistryStore
from gateway.registry.schemas import DeviceSpec
from gateway.service import DeviceService, IssuedCredentials
from tests.servers import MosquittoServer, dynsec_mosquitto

ADMIN = ("nakhon-admin", "admin-" + uuid.uuid4().hex)
COLLECTOR = ("collectors", "collect-" + uuid.uuid4().hex)
COLLECTOR_ID = "nakhon-collector"
# A second collectors' process has its own account, pinned to its own client id (shared-subscription member).
COLLECTOR_2 = ("collectors-2", "collect-" + uuid.uuid4().hex)
COLLECTOR_2_ID = "nakhon-collector-2"
NOT_AUTHORIZED = 135
NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5: accepted, but nobody subscribed
ACCEPTED = (0, NO_MATCHING_SUBSCRIBERS)


class ConnectRefusedError(Exception):
    def __init__(self, reason_code: int) -> None:
        super().__init__(f"CONNACK reason code {reason_code}")
        self.reason_code = reason_code


@dataclass
class MqttClient:
    client: mqtt.Client
    messages: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)
    acks: dict[int, int] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> int:
        """QoS 1 publish; returns the PUBACK reason code (0 = success)."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, timeout), "no PUBACK"
            return self.acks[info.mid]

    def subscribe(self, topic_filter: str) -> int:
        granted: queue.Queue[int] = queue.Queue()

        def on_subscribe(_c: Any, _u: Any, _mid: int, reason_codes: list[Any], _p: Any) -> None:
            granted.put(int(reason_codes[0].value if hasattr(reason_codes[0], "value") else reason_codes[0]))

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(topic_filter, qos=1)
        return granted.get(timeout=5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    port: int, username: str | None, password: str | None, *, v5: bool = True, client_id: str | None = None
) -> MqttClient:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    wrapper = MqttClient(client)
    if username is not None:
        client.username_pw_set(username, password)
    result: queue.Queue[int] = queue.Queue()

    def on_connect(_c: Any, _u: Any, _flags: Any, reason_code: Any, _p: Any) -> None:
        result.put(int(reason_code.value))

    def on_publish(_c: Any, _u: Any, mid: int, reason_code: Any, _p: Any) -> None:
        with wrapper.acked:
            wrapper.acks[mid] = int(reason_code.value)
            wrapper.acked.notify_all()

    def on_disconnect(*_args: Any) -> None:
        wrapper.disconnected.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.on_message = lambda _c, _u, message: wrapper.messages.put((message.topic, bytes(message.payload)))
    client.reconnect_delay_set(60, 120)  # a refused client must not retry during the test
    client.connect("127.0.0.1", port)
    client.loop_start()
    code = result.get(timeout=5)
    if code != 0:
        client.loop_stop()
        raise ConnectRefusedError(code)
    return wrapper


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    with dynsec_mosquitto(tmp_path, *ADMIN) as server:
        yield server


@dataclass
class Gateway:
    store: RegistryStore
    port: int

    def run(self, work: Any) -> Any:
        async def main() -> Any:
            provisioner = MosquittoProvisioner("127.0.0.1", self.port, *ADMIN)
            try:
                return await work(DeviceService(self.store, provisioner))
            finally:
                await provisioner.close()

        return asyncio.run(main())

    def add(self, device_id: str, city: str = "chiangmai", feed: str = "flood") -> IssuedCredentials:
        spec = DeviceSpec(device_id=device_id, feed=feed, city=city, district="Mueang")  # type: ignore[arg-type]
        _device, credentials = self.run(lambda s: s.create_device(spec, actor="test"))
        assert credentials is not None
        return credentials


@pytest.fixture
def gateway(broker: MosquittoServer, sqlite_store: RegistryStore) -> Gateway:
    gw = Gateway(sqlite_store, broker.port)
    gw.run(lambda s: s.ensure_collector_account(*COLLECTOR, actor="test", client_id=COLLECTOR_ID))
    gw.run(lambda s: s.ensure_collector_account(*COLLECTOR_2, actor="test", client_id=COLLECTOR_2_ID))
    return gw


def connect_collector(port: int) -> MqttClient:
    return connect(port, *COLLECTOR, client_id=COLLECTOR_ID)


def connect_device(port: int, credentials: IssuedCredentials, *, v5: bool = True) -> MqttClient:
    return connect(port, credentials.username, credentials.password, v5=v5, client_id=credentials.client_id)


def expect_message(client: MqttClient, timeout: float = 5.0) -> tuple[str, bytes]:
    return client.messages.get(timeout=timeout)


def expect_nothing(client: MqttClient, wait: float = 0.7) -> None:
    with pytest.raises(queue.Empty):
        client.messages.get(timeout=wait)


def connect_code(port: int, username: str, password: str, client_id: str, *, clean_start: bool = False) -> int:
    """CONNACK reason code of one MQTT 5 connection attempt (the connection is closed again at once)."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    codes: queue.Queue[int] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.put(int(reason.value))
    client.reconnect_delay_set(60, 120)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=clean_start, properties=properties)
    client.loop_start()
    try:
        return codes.get(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()
