"""Against a real Mosquitto with the dynamic-security plugin: what the gateway provisions is what the broker
enforces. Devices publish only to their own topic, collectors read (also as shared-subscription members),
revocation and rotation take effect at once, anonymous clients are refused."""

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

from gateway.broker import DynsecCommandError, DynsecUnavailableError, MosquittoProvisioner
from gateway.broker.setup import mosquitto_conf_text
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


def test_device_message_reaches_collectors_directly_and_as_shared_subscriber(gateway: Gateway) -> None:
    credentials = gateway.add("cm-flood-1")
    direct = connect_collector(gateway.port)
    shared = connect(gateway.port, *COLLECTOR_2, client_id=COLLECTOR_2_ID)
    try:
        assert direct.subscribe("city/#") == 1  # granted QoS 1
        assert shared.subscribe("$share/nakhon/city/#") == 1
        device = connect_device(gateway.port, credentials)
        assert device.publish(credentials.topic, b'{"level_m": 2.1}') == 0
        assert expect_message(direct) == ("city/chiangmai/flood/cm-flood-1", b'{"level_m": 2.1}')
        assert expect_message(shared) == ("city/chiangmai/flood/cm-flood-1", b'{"level_m": 2.1}')
        # A device may not read what others publish.
        assert device.subscribe("city/#") == NOT_AUTHORIZED
        device.close()
    finally:
        direct.close()
        shared.close()


def test_publishing_to_another_devices_topic_is_refused(gateway: Gateway) -> None:
    mine = gateway.add("dev-a")
    other = gateway.add("dev-b")
    collector = connect_collector(gateway.port)
    try:
        collector.subscribe("city/#")
        device_v5 = connect_device(gateway.port, mine)
        assert device_v5.publish(other.topic, b"spoofed") == NOT_AUTHORIZED  # MQTT 5: PUBACK 135
        assert device_v5.publish("city/chiangmai/flood", b"spoofed") == NOT_AUTHORIZED
        device_v5.close()
        device_v3 = connect_device(gateway.port, mine, v5=False)
        assert device_v3.publish(other.topic, b"spoofed") == 0  # MQTT 3.1.1: "success", silently dropped
        device_v3.close()
        expect_nothing(collector)
    finally:
        collector.close()


def test_revoked_device_cannot_connect_and_is_disconnected(gateway: Gateway) -> None:
    credentials = gateway.add("to-retire")
    live = connect_device(gateway.port, credentials)
    gateway.run(lambda s: s.retire_device("to-retire", actor="test"))
    assert live.disconnected.wait(5), "a live session of a retired device must be dropped"
    live.client.loop_stop()
    with pytest.raises(ConnectRefusedError) as refused:
        connect_device(gateway.port, credentials)
    assert refused.value.reason_code == NOT_AUTHORIZED
    assert gateway.store.get_device("to-retire").status == "retired"


def test_rotation_old_password_fails_new_one_works(gateway: Gateway) -> None:
    old = gateway.add("to-rotate")
    live = connect_device(gateway.port, old)
    new = gateway.run(lambda s: s.rotate_credentials("to-rotate", actor="test"))
    assert new.password != old.password
    assert live.disconnected.wait(5), "a session opened with the old password must be dropped"
    live.client.loop_stop()
    with pytest.raises(ConnectRefusedError):
        connect_device(gateway.port, old)
    collector = connect_collector(gateway.port)
    try:
        collector.subscribe("city/#")
        device = connect_device(gateway.port, new)
        assert device.publish(new.topic, b"{}") == 0
        assert expect_message(collector)[0] == new.topic
        device.close()
    finally:
        collector.close()


def test_moving_a_device_moves_its_permission(gateway: Gateway) -> None:
    from gateway.registry.schemas import DevicePatch

    credentials = gateway.add("mover")
    gateway.run(lambda s: s.update_device("mover", DevicePatch(city="lamphun"), actor="test"))
    device = connect_device(gateway.port, credentials)
    try:
        assert device.publish("city/lamphun/flood/mover", b"{}") in ACCEPTED
        assert device.publish("city/chiangmai/flood/mover", b"{}") == NOT_AUTHORIZED
    finally:
        device.close()


def test_anonymous_and_unknown_clients_are_refused(broker: MosquittoServer) -> None:
    with pytest.raises(ConnectRefusedError):
        connect(broker.port, None, None)
    with pytest.raises(ConnectRefusedError):
        connect(broker.port, None, None, v5=False)
    with pytest.raises(ConnectRefusedError):
        connect(broker.port, "nobody", "guess")


def test_typed_errors_from_the_broker(broker: MosquittoServer) -> None:
    async def duplicate() -> None:
        provisioner = MosquittoProvisioner("127.0.0.1", broker.port, *ADMIN)
        try:
            await provisioner.create_device_client("twice", "pw-123456789", city="c", feed="air")
            with pytest.raises(DynsecCommandError) as excinfo:
                await provisioner.create_device_client("twice", "pw-123456789", city="c", feed="air")
            assert excinfo.value.command == "createClient" and "already exists" in excinfo.value.error
            assert "pw-123456789" not in str(excinfo.value.as_dict())
        finally:
            await provisioner.close()

    async def wrong_admin() -> None:
        provisioner = MosquittoProvisioner("127.0.0.1", broker.port, "nakhon-admin", "wrong-password")
        with pytest.raises(DynsecUnavailableError) as excinfo:
            await provisioner.revoke_device_client("x")
        assert "wrong-password" not in str(excinfo.value)
        await provisioner.close()

    asyncio.run(duplicate())
    asyncio.run(wrong_admin())


def test_deploy_config_matches_what_the_tests_run() -> None:
    shipped = (Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for line in (
        "allow_anonymous false",
        "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "plugin_opt_config_file",
        "max_queued_messages 1000000",
    ):
        assert line in shipped
    generated = mosquitto_conf_text(Path("/var/lib/mosquitto/dynamic-security.json"))
    assert "allow_anonymous false" in generated and "max_queued_messages 1000000" in generated
