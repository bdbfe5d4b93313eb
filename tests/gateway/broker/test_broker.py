"""Against a real Mosquitto with the dynamic-security plugin: what the gateway provisions is what the broker
enforces. Devices publish only to their own topic, collectors read (also as shared-subscription members),
revocation and rotation take effect at once, anonymous clients are refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.broker import DynsecCommandError, DynsecUnavailableError, MosquittoProvisioner
from gateway.broker.setup import mosquitto_conf_text
from tests.gateway.brokerkit import (
    ACCEPTED,
    ADMIN,
    COLLECTOR_2,
    COLLECTOR_2_ID,
    NOT_AUTHORIZED,
    ConnectRefusedError,
    Gateway,
    connect,
    connect_collector,
    connect_device,
    expect_message,
    expect_nothing,
)
from tests.servers import MosquittoServer


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
    assert gateway.store.devices.get("to-retire").status == "retired"


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
    shipped = (Path(__file__).resolve().parents[3] / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for line in (
        "allow_anonymous false",
        "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "plugin_opt_config_file",
        "max_queued_messages 1000000",
    ):
        assert line in shipped
    generated = mosquitto_conf_text(Path("/var/lib/mosquitto/dynamic-security.json"))
    assert "allow_anonymous false" in generated and "max_queued_messages 1000000" in generated
