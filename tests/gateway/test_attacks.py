"""Attacks on a real Mosquitto with dynamic security, as a hostile device or a careless engineer would try
them. Each test names what it tries; each must fail at it.

The broker runs the production limits (`gateway.broker.setup.limit_conf_lines`, as deploy/mosquitto ships
them); devices are provisioned by the gateway's `DeviceService`, the collectors' account is pinned to its
client id.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.broker import BrokerAccountNotOwnedError, MosquittoProvisioner, ServiceAccountNameError
from gateway.broker.setup import MAX_PACKET_BYTES, limit_conf_lines
from gateway.errors import ConflictError, InvalidInputError
from gateway.registry.models import Device
from gateway.registry.schemas import DeviceSpec
from gateway.service import DeviceService
from tests.gateway.brokerkit import (
    ADMIN,
    COLLECTOR,
    COLLECTOR_ID,
    NOT_AUTHORIZED,
    Gateway,
    connect_code,
    connect_collector,
    connect_device,
    expect_message,
    expect_nothing,
)
from tests.servers import MosquittoServer

BAD_USERNAME_OR_PASSWORD = 134


def run(port: int, work: Any, store: Any, *, reserved: frozenset[str] = frozenset()) -> Any:
    async def main() -> Any:
        provisioner = MosquittoProvisioner("127.0.0.1", port, *ADMIN)
        try:
            return await work(DeviceService(store, provisioner, reserved_ids=reserved), provisioner)
        finally:
            await provisioner.close()

    return asyncio.run(main())


# ---------------------------------------------------------------- client-id takeover


def test_device_taking_over_the_collectors_client_id_is_refused_and_the_collector_keeps_its_session(
    gateway: Gateway,
) -> None:
    thief = gateway.add("thief")
    sender = gateway.add("sender")
    collector = connect_collector(gateway.port)
    try:
        assert collector.subscribe("city/#") == 1
        # the attack of the report: valid device credentials, the collectors' client id, resume their session
        assert connect_code(gateway.port, thief.username, thief.password, COLLECTOR_ID) == NOT_AUTHORIZED
        assert not collector.disconnected.is_set(), "the collectors' connection must not be closed"
        device = connect_device(gateway.port, sender)
        assert device.publish(sender.topic, b'{"level_m": 1.0}') == 0
        assert expect_message(collector) == (sender.topic, b'{"level_m": 1.0}')
        device.close()
    finally:
        collector.close()


def test_device_taking_over_another_devices_client_id_is_refused(gateway: Gateway) -> None:
    victim = gateway.add("victim")
    thief = gateway.add("thief-2")
    live = connect_device(gateway.port, victim)
    try:
        assert connect_code(gateway.port, thief.username, thief.password, victim.client_id) == NOT_AUTHORIZED
        assert connect_code(gateway.port, thief.username, thief.password, "victim") == NOT_AUTHORIZED
        assert not live.disconnected.is_set()
        assert live.publish(victim.topic, b"{}") in (0, 16)
    finally:
        live.close()


def test_device_connecting_with_any_client_id_but_its_own_is_refused(gateway: Gateway) -> None:
    device = gateway.add("picky")
    assert device.client_id == device.username == "device.picky"
    for other in ("picky", "random-id", "nakhon-gateway", ""):
        assert connect_code(gateway.port, device.username, device.password, other, clean_start=True) != 0, other
    assert connect_code(gateway.port, device.username, device.password, device.client_id) == 0


def test_collectors_account_with_another_client_id_is_refused(gateway: Gateway) -> None:
    assert connect_code(gateway.port, *COLLECTOR, "someone-else") == NOT_AUTHORIZED
    assert connect_code(gateway.port, *COLLECTOR, COLLECTOR_ID) == 0


def test_taking_over_the_gateways_admin_connection_is_refused(broker: MosquittoServer, sqlite_store: Any) -> None:
    async def pin() -> None:
        provisioner = MosquittoProvisioner("127.0.0.1", broker.port, *ADMIN, client_id="nakhon-gateway")
        try:
            assert await provisioner.pin_admin_account() is True
            assert await provisioner.pin_admin_account() is False  # already pinned: nothing changes
            await DeviceService(sqlite_store, provisioner).ensure_collector_account(
                *COLLECTOR, actor="test", client_id=COLLECTOR_ID
            )
        finally:
            await provisioner.close()

    asyncio.run(pin())
    assert connect_code(broker.port, *ADMIN, "not-the-gateway") == NOT_AUTHORIZED
    assert connect_code(broker.port, *COLLECTOR, "nakhon-gateway") == NOT_AUTHORIZED
    assert connect_code(broker.port, *ADMIN, "nakhon-gateway") == 0


# ---------------------------------------------------------------- namespaces


SERVICE_NAMES = ("collectors", "nakhon-admin", "nakhon-collector", "nakhon-gateway", "admin", "Collectors")


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_registering_a_device_named_like_a_service_account_is_refused(
    name: str, gateway: Gateway
) -> None:
    with pytest.raises(ValueError, match="reserved"):
        DeviceSpec(device_id=name, feed="air", city="c", district="d")  # type: ignore[arg-type]
    csv = f"device_id,feed,city,district,lat,lon,name\n{name},air,c,d,,,x\n"
    report = run(gateway.port, lambda s, _p: s.import_csv(csv, actor="test", atomic=False), gateway.store)
    assert report.created == 0 and report.errors and report.errors[0]["field"] == "device_id"
    assert not gateway.store.devices.exists(name)


def test_registering_a_device_named_like_a_configured_service_account_is_refused(gateway: Gateway) -> None:
    reserved = frozenset({"city-collector", "gw-admin"})
    spec = DeviceSpec(device_id="city-collector", feed="air", city="c", district="d")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        run(gateway.port, lambda s, _p: s.create_device(spec, actor="test"), gateway.store, reserved=reserved)
    csv = "device_id,feed,city,district,lat,lon,name\ngw-admin,air,c,d,,,x\nfine-1,air,c,d,,,x\n"
    report = run(
        gateway.port, lambda s, _p: s.import_csv(csv, actor="test", atomic=False), gateway.store, reserved=reserved
    )
    assert report.created_ids == ["fine-1"] and report.errors[0]["row"] == 2


def _legacy_device(store: Any, device_id: str) -> None:
    """A registry row as an older gateway could have left it: named like a service account, adopted."""
    spec = DeviceSpec(device_id="placeholder", feed="air", city="c", district="d")  # type: ignore[arg-type]
    store.devices.create(spec, actor="test", mqtt_username="placeholder", mqtt_password_hash="x")
    with store.db.transaction() as session:
        row = session.get(Device, "placeholder")
        row.device_id = device_id
        row.mqtt_username = device_id


@pytest.mark.parametrize("service", ["collectors", "nakhon-admin"])
def test_rotating_or_retiring_a_legacy_device_named_like_a_service_account_leaves_that_account_alone(
    service: str, gateway: Gateway
) -> None:
    _legacy_device(gateway.store, service)

    async def rotate(s: DeviceService, _p: Any) -> None:
        await s.rotate_credentials(service, actor="engineer")

    async def retire(s: DeviceService, _p: Any) -> None:
        await s.retire_device(service, actor="engineer")

    with pytest.raises(InvalidInputError):  # reserved: no credentials are issued under that name
        run(gateway.port, rotate, gateway.store)
    with pytest.raises(BrokerAccountNotOwnedError):  # the service account is not this device's to delete
        run(gateway.port, retire, gateway.store)
    assert connect_code(gateway.port, *COLLECTOR, COLLECTOR_ID) == 0  # the collectors still log in
    assert run(gateway.port, lambda _s, p: p.get_client(ADMIN[0]), gateway.store) is not None
    collector = connect_collector(gateway.port)  # and the admin still works: provisioning goes on
    try:
        collector.subscribe("city/#")
        fresh = gateway.add("after-the-attack")
        device = connect_device(gateway.port, fresh)
        assert device.publish(fresh.topic, b"{}") == 0
        assert expect_message(collector)[0] == fresh.topic
        device.close()
    finally:
        collector.close()


def test_a_broker_client_the_registry_did_not_issue_is_never_adopted(gateway: Gateway) -> None:
    """Someone made `device.squatter` by hand; registering or rotating that device must not take it over."""

    async def squat(_s: DeviceService, p: MosquittoProvisioner) -> None:
        await p.client.execute(
            [{"command": "createClient", "username": "device.squatter", "password": "squatter-pass"}]
        )

    run(gateway.port, squat, gateway.store)
    spec = DeviceSpec(device_id="squatter", feed="air", city="c", district="d")  # type: ignore[arg-type]
    with pytest.raises(ConflictError):
        run(gateway.port, lambda s, _p: s.create_device(spec, actor="test"), gateway.store)
    assert not gateway.store.devices.exists("squatter")
    gateway.store.devices.create(spec, actor="test")  # registered without credentials (as a CSV import does)
    with pytest.raises(ConflictError) as refused:
        run(gateway.port, lambda s, _p: s.rotate_credentials("squatter", actor="test"), gateway.store)
    assert refused.value.status_code == 409
    # the hand-made account is untouched: its password still works, and the registry issued nothing
    assert connect_code(gateway.port, "device.squatter", "squatter-pass", "anything", clean_start=True) == 0
    assert gateway.store.devices.get("squatter").has_mqtt_credentials is False


def test_collectors_account_named_like_a_device_account_or_the_admin_is_refused(gateway: Gateway) -> None:
    for username in ("device.collectors", ADMIN[0]):
        with pytest.raises(ServiceAccountNameError):
            run(gateway.port, lambda s, _p, u=username: s.ensure_collector_account(u, "pw", actor="t"), gateway.store)
    with pytest.raises(ServiceAccountNameError):
        run(
            gateway.port,
            lambda s, _p: s.ensure_collector_account("c2", "pw", actor="t", client_id="device.x"),
            gateway.store,
        )
    # an existing client that is not the collectors' is never turned into one, nor its password changed
    async def bystander(_s: DeviceService, p: MosquittoProvisioner) -> None:
        await p.client.execute([{"command": "createClient", "username": "bystander", "password": "own-pass"}])

    run(gateway.port, bystander, gateway.store)
    with pytest.raises(BrokerAccountNotOwnedError):
        run(gateway.port, lambda s, _p: s.ensure_collector_account("bystander", "pw", actor="t"), gateway.store)
    assert connect_code(gateway.port, "bystander", "own-pass", "b", clean_start=True) == 0


# ---------------------------------------------------------------- topics


def test_device_reading_another_devices_topic_is_refused(gateway: Gateway) -> None:
    reader = gateway.add("nosy")
    other = gateway.add("watched")
    spy = connect_device(gateway.port, reader)
    try:
        for topic_filter in (other.topic, reader.topic, "city/#", "#", "$share/nakhon/city/#", "$SYS/#"):
            assert spy.subscribe(topic_filter) == NOT_AUTHORIZED, topic_filter
        device = connect_device(gateway.port, other)
        assert device.publish(other.topic, b"secret") == 16  # MQTT 5: accepted, no matching subscribers at all
        device.close()
        expect_nothing(spy)
    finally:
        spy.close()


def test_device_publishing_to_control_topics_is_refused(gateway: Gateway) -> None:
    attacker = gateway.add("wannabe-admin")
    client = connect_device(gateway.port, attacker)
    command = b'{"commands": [{"command": "createClient", "username": "evil", "password": "evil-pass"}]}'
    try:
        assert client.publish("$CONTROL/dynamic-security/v1", command) == NOT_AUTHORIZED
        assert client.publish("$CONTROL/anything", b"x") == NOT_AUTHORIZED
        assert client.subscribe("$CONTROL/#") == NOT_AUTHORIZED
    finally:
        client.close()
    assert run(gateway.port, lambda _s, p: p.get_client("evil"), gateway.store) is None
    assert connect_code(gateway.port, "evil", "evil-pass", "evil") == NOT_AUTHORIZED


def test_device_publishing_a_retained_message_is_refused(gateway: Gateway) -> None:
    device = gateway.add("retainer")
    client = connect_device(gateway.port, device)
    client.client.publish(device.topic, b'{"level_m": 9.9}', qos=1, retain=True)
    assert client.disconnected.wait(5), "a retained publish must be refused (disconnect: retain not available)"
    client.client.loop_stop()
    late = connect_collector(gateway.port)  # a subscriber arriving later finds nothing left behind
    try:
        assert late.subscribe("city/#") == 1
        expect_nothing(late)
    finally:
        late.close()


def test_device_publishing_an_oversized_message_is_refused(gateway: Gateway) -> None:
    device = gateway.add("big-mouth")
    collector = connect_collector(gateway.port)
    try:
        collector.subscribe("city/#")
        client = connect_device(gateway.port, device)
        client.client.publish(device.topic, b"x" * (MAX_PACKET_BYTES + 1), qos=1)
        assert client.disconnected.wait(5), "an oversized packet must be refused (the client is disconnected)"
        client.client.loop_stop()
        expect_nothing(collector)
        small = connect_device(gateway.port, device)  # the limit is on the packet, not the device
        assert small.publish(device.topic, b'{"level_m": 1.0}') == 0
        assert expect_message(collector)[0] == device.topic
        small.close()
    finally:
        collector.close()


def test_shipped_broker_config_carries_the_device_limits() -> None:
    shipped = (Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    for line in limit_conf_lines().splitlines():
        if line and not line.startswith("#"):
            assert line in shipped.splitlines(), line

