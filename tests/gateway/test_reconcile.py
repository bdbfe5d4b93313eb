"""`nakhon devices reconcile` on a real dynamic-security Mosquitto: every kind of disagreement between the
registry and the broker is reported, `--fix` repairs what can be repaired, and both are audited."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import update
from typer.testing import CliRunner

from gateway.broker import MosquittoProvisioner
from gateway.registry.models import Device
from gateway.registry.schemas import DeviceSpec
from gateway.secrets import hash_password
from gateway.service import DeviceService
from tests.gateway.brokerkit import ADMIN, NOT_AUTHORIZED, Gateway, connect_code


def broker_commands(gateway: Gateway, commands: list[dict[str, Any]]) -> None:
    async def main() -> None:
        provisioner = MosquittoProvisioner("127.0.0.1", gateway.port, *ADMIN)
        try:
            await provisioner.client.execute(commands)
        finally:
            await provisioner.close()

    asyncio.run(main())


def legacy_account(gateway: Gateway, device_id: str, password: str) -> None:
    """What a gateway before namespaced accounts made: username = device id, no pinned client id."""
    topic = f"city/chiangmai/flood/{device_id}"
    broker_commands(gateway, [
        {"command": "createRole", "rolename": f"device-{device_id}", "textname": f"publish {topic} only"},
        {"command": "addRoleACL", "rolename": f"device-{device_id}", "acltype": "publishClientSend",
         "topic": topic, "priority": 0, "allow": True},
        {"command": "createClient", "username": device_id, "password": password,
         "textname": f"nakhon device {device_id}", "roles": [{"rolename": f"device-{device_id}", "priority": 0}]},
    ])
    spec = DeviceSpec(device_id=device_id, feed="flood", city="chiangmai", district="Mueang")  # type: ignore[arg-type]
    gateway.store.devices.create(spec, actor="old gateway", mqtt_username=device_id,
                                mqtt_password_hash=hash_password(password))


def kinds(report: Any) -> set[tuple[str, str]]:
    return {(d.device_id, d.kind) for d in report.differences}


def test_reconcile_reports_every_difference_and_fix_repairs_them(gateway: Gateway) -> None:
    gateway.add("in-sync")
    gateway.add("lost-account")
    broker_commands(gateway, [{"command": "deleteClient", "username": "device.lost-account"}])
    orphan = gateway.add("retired-behind-our-back")
    with gateway.store.db.transaction() as session:  # the registry changed, the broker was not told
        session.execute(update(Device).where(Device.device_id == "retired-behind-our-back").values(status="retired"))
        session.execute(update(Device).where(Device.device_id == "in-sync").values(city="chiangmai"))
    moved = gateway.add("moved-behind-our-back", city="lamphun")
    with gateway.store.db.transaction() as session:
        session.execute(update(Device).where(Device.device_id == "moved-behind-our-back").values(city="lampang"))
    legacy_account(gateway, "old-timer", "old-password-1")

    def run(fix: bool) -> Any:
        return gateway.run(lambda s: s.reconcile(fix=fix, actor="test"))

    found = run(False)
    assert kinds(found) == {
        ("lost-account", "missing_on_broker"),
        ("retired-behind-our-back", "orphan_on_broker"),
        ("moved-behind-our-back", "wrong_topic"),
        ("old-timer", "legacy_username"),
        ("old-timer", "not_pinned"),
    }
    assert not any(d.fixed for d in found.differences)
    assert connect_code(gateway.port, orphan.username, orphan.password, orphan.client_id) == 0  # nothing changed

    fixed = run(True)
    assert {(d.device_id, d.kind) for d in fixed.unfixed} == {("old-timer", "legacy_username")}
    assert gateway.store.devices.get("lost-account").has_mqtt_credentials is False  # rotate to reissue
    assert connect_code(gateway.port, orphan.username, orphan.password, orphan.client_id) == NOT_AUTHORIZED
    assert connect_code(gateway.port, "old-timer", "old-password-1", "old-timer") == 0  # keeps working ...
    assert connect_code(gateway.port, "old-timer", "old-password-1", "nakhon-collector") == NOT_AUTHORIZED  # pinned
    assert connect_code(gateway.port, moved.username, moved.password, moved.client_id) == 0

    again = run(False)
    assert kinds(again) == {("old-timer", "legacy_username")}
    # rotating the legacy device moves it to its namespaced, pinned account and removes the old one
    credentials = gateway.run(lambda s: s.rotate_credentials("old-timer", actor="test"))
    assert credentials.username == "device.old-timer"
    assert connect_code(gateway.port, "old-timer", "old-password-1", "old-timer") != 0
    assert kinds(run(False)) == set()
    actions = [e.action for e in gateway.store.audit.find(entity_type="broker").items]
    assert actions.count("broker.reconcile") == 4
    repairs = {e.action for e in gateway.store.audit.find(limit=1000).items if e.action.startswith("broker.reconcile.")}
    assert repairs == {"broker.reconcile.missing_on_broker", "broker.reconcile.orphan_on_broker",
                       "broker.reconcile.wrong_topic", "broker.reconcile.not_pinned"}


def test_reconcile_cli_exits_1_while_differences_remain(gateway: Gateway) -> None:
    import typer

    from gateway.cli import devices_app

    gateway.add("fine")
    broker_commands(gateway, [{"command": "deleteClient", "username": "device.fine"}])
    shell = typer.Typer()
    shell.add_typer(devices_app, name="devices")

    def provisioner() -> MosquittoProvisioner:
        return MosquittoProvisioner("127.0.0.1", gateway.port, *ADMIN)

    obj = {"registry": lambda: gateway.store, "provisioner": provisioner}
    runner = CliRunner()
    checked = runner.invoke(shell, ["devices", "reconcile"], obj=obj)
    assert checked.exit_code == 1 and "fine\tmissing_on_broker" in checked.output
    repaired = runner.invoke(shell, ["devices", "reconcile", "--fix"], obj=obj)
    assert repaired.exit_code == 0 and "(fixed)" in repaired.output
    assert runner.invoke(shell, ["devices", "reconcile"], obj=obj).exit_code == 0


def test_reconcile_needs_a_broker(sqlite_store: Any) -> None:
    import pytest

    from gateway.errors import BrokerNotConfiguredError

    with pytest.raises(BrokerNotConfiguredError):
        asyncio.run(DeviceService(sqlite_store, None).reconcile(fix=False, actor="t"))


def test_gateway_start_reports_differences_and_pins_its_admin_account(gateway: Gateway, caplog: Any) -> None:
    import logging

    from nakhon.registry_wiring import check_broker_at_start

    gateway.add("vanished")
    broker_commands(gateway, [{"command": "deleteClient", "username": "device.vanished"}])

    async def main() -> None:
        provisioner = MosquittoProvisioner("127.0.0.1", gateway.port, *ADMIN, client_id="nakhon-gateway")
        try:
            await check_broker_at_start(gateway.store, provisioner)
        finally:
            await provisioner.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert "vanished\tmissing_on_broker" in caplog.text and "reconcile --fix" in caplog.text
    assert gateway.store.devices.get("vanished").has_mqtt_credentials  # reported, not repaired
    assert connect_code(gateway.port, *ADMIN, "someone-else") == NOT_AUTHORIZED


def test_gateway_start_with_the_broker_down_only_warns(sqlite_store: Any, caplog: Any) -> None:
    from nakhon.registry_wiring import check_broker_at_start
    from tests.servers import free_port

    async def main() -> None:
        provisioner = MosquittoProvisioner("127.0.0.1", free_port(), *ADMIN, timeout_s=2)
        try:
            await check_broker_at_start(sqlite_store, provisioner)
        finally:
            await provisioner.close()

    asyncio.run(main())
    assert "could not compare the registry with the broker" in caplog.text
    assert ADMIN[1] not in caplog.text
