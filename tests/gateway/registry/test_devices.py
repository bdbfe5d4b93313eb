"""Devices: register, read, filter and page, change, retire, maintenance, credentials; every change audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import ConflictError, DeviceNotFoundError, InvalidInputError
from gateway.registry import RegistryStore
from gateway.registry.schemas import DevicePatch
from gateway.secrets import REDACTED
from tests.gateway.registry.specs import flood


def test_create_get_list_with_filters_and_paging(store: RegistryStore) -> None:
    store.devices.create(flood("a-1"), actor="t")
    store.devices.create(flood("a-2", district="Hang Dong"), actor="t")
    store.devices.create(flood("b-1", feed="air", city="bangkok", district="Bang Rak", site={}), actor="t")
    device = store.devices.get("a-1")
    assert device.topic == "city/chiangmai/flood/a-1"
    assert device.created_at.tzinfo is not None and device.created_at.utcoffset() == timedelta(0)
    assert store.devices.find(city="chiangmai").total == 2
    assert [d.device_id for d in store.devices.find(district="Hang Dong").items] == ["a-2"]
    assert store.devices.find(feed="air").total == 1
    page = store.devices.find(limit=2, offset=1)
    assert page.total == 3 and [d.device_id for d in page.items] == ["a-2", "b-1"]
    with pytest.raises(DeviceNotFoundError):
        store.devices.get("nope")


def test_duplicates_and_dev_eui_uniqueness(store: RegistryStore) -> None:
    store.devices.create(flood("a-1", dev_eui="70B3D57ED0001234"), actor="t")
    assert store.devices.get("a-1").dev_eui == "70b3d57ed0001234"  # stored lower-case
    with pytest.raises(ConflictError):
        store.devices.create(flood("a-1"), actor="t")
    with pytest.raises(ConflictError) as excinfo:
        store.devices.create(flood("a-2", dev_eui="70b3d57ed0001234"), actor="t")
    assert excinfo.value.context["field"] == "dev_eui"


def test_bad_input_names_the_field() -> None:
    with pytest.raises(Exception) as excinfo:
        flood("bad id/with slash", site={"bank_level_m": "high"})
    text = str(excinfo.value)
    assert "device_id" in text and "site" in text
    with pytest.raises(Exception, match="unknown site field 'colour'"):
        flood(site={"colour": 1})
    with pytest.raises(Exception, match="dev_eui"):
        flood(dev_eui="xyz")


def test_update_retire_maintenance_and_audit(store: RegistryStore) -> None:
    store.devices.create(flood(), actor="token:eng")
    before, after = store.devices.update(
        "cm-flood-1", DevicePatch(name="New name", site={"bank_level_m": 4.0}), actor="token:eng"
    )
    assert before.name == "P.1 Nawarat bridge" and after.name == "New name"
    assert after.site == {"bank_level_m": 4.0}
    with pytest.raises(InvalidInputError) as excinfo:
        store.devices.update("cm-flood-1", DevicePatch.model_validate({"city": None}), actor="t")
    assert excinfo.value.problems[0].field == "city"
    until = datetime.now(UTC) + timedelta(hours=2)
    device = store.devices.set_maintenance("cm-flood-1", until, actor="t")
    assert device.in_maintenance
    device = store.devices.set_maintenance("cm-flood-1", datetime.now(UTC) - timedelta(seconds=1), actor="t")
    assert not device.in_maintenance  # maintenance ends by itself: active iff until > now
    store.devices.set_credentials(
        "cm-flood-1", mqtt_username="cm-flood-1", mqtt_password_hash="scrypt$secret", actor="t"
    )
    retired = store.devices.retire("cm-flood-1", actor="t")
    assert retired.status == "retired" and not retired.has_mqtt_credentials
    audit = store.audit.find(entity_id="cm-flood-1", limit=50)
    actions = [entry.action for entry in audit.items]
    assert actions[0] == "device.retire" and actions[-1] == "device.create"
    assert "device.update" in actions and "device.rotate_credentials" in actions
    rotate = next(e for e in audit.items if e.action == "device.rotate_credentials")
    assert rotate.after is not None and rotate.after["mqtt_password_hash"] == REDACTED
    assert "scrypt$secret" not in str([e.model_dump() for e in audit.items])
    assert audit.items[-1].actor == "token:eng"
    assert all(e.at.utcoffset() == timedelta(0) for e in audit.items)
