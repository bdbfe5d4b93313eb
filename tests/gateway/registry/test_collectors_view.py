"""The collectors' view: profile defaults with the device's overrides on top, as `DeviceInfo`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.errors import ConflictError, InvalidInputError
from gateway.registry import RegistryDirectory, RegistryStore
from gateway.registry.schemas import OverridesSpec, ProfilePatch, ProfileSpec
from tests.gateway.registry.specs import flood


def test_profiles_overrides_and_directory_merge(store: RegistryStore) -> None:
    store.profiles.create(
        ProfileSpec(
            name="ultrasonic-v1",
            feed="flood",
            expected_fields=["level_m", "battery_pct"],
            default_thresholds={"level_warning_m": 3.0, "level_critical_m": 3.7},
            heartbeat_s=300,
        ),
        actor="t",
    )
    with pytest.raises(InvalidInputError) as excinfo:
        store.devices.create(flood(feed="air", profile="ultrasonic-v1", site={}), actor="t")
    assert excinfo.value.problems[0].field == "profile"
    store.devices.create(flood(profile="ultrasonic-v1", dev_eui="0011223344556677"), actor="t")
    store.overrides.set(
        "cm-flood-1",
        OverridesSpec.model_validate(
            {"thresholds": {"level_critical_m": 3.9}, "calibration": {"level_m": {"offset": -0.12, "scale": 1.0}}}
        ),
        actor="t",
    )
    with pytest.raises(InvalidInputError) as excinfo:
        store.overrides.set("cm-flood-1", OverridesSpec.model_validate({"calibration": {"pm25_ugm3": {}}}), actor="t")
    assert excinfo.value.problems[0].field == "calibration.pm25_ugm3"
    with pytest.raises(ConflictError):
        store.profiles.delete("ultrasonic-v1", actor="t")
    store.profiles.update("ultrasonic-v1", ProfilePatch(heartbeat_s=600), actor="t")
    with pytest.raises(InvalidInputError):
        store.profiles.update("ultrasonic-v1", ProfilePatch(expected_fields=["pm25_ugm3"]), actor="t")

    until = datetime(2030, 1, 1, 7, 0, tzinfo=UTC)
    store.devices.set_maintenance("cm-flood-1", until, actor="t")
    directory = RegistryDirectory(store, refresh_s=60, start=False)
    info = directory.by_id("cm-flood-1")
    assert info is not None
    assert info.thresholds == {"level_warning_m": 3.0, "level_critical_m": 3.9}
    assert info.calibration == {"level_m": {"offset": -0.12, "scale": 1.0}}
    assert info.heartbeat_s == 600
    assert info.site == {"bank_level_m": 3.7, "ground_level_m": 0.0}
    assert info.maintenance_until_ns == int(until.timestamp()) * 1_000_000_000
    assert directory.by_dev_eui("0011223344556677") is info
    assert directory.by_dev_eui("0011223344556677".upper()) is info
    directory.stop()


def test_the_mapping_applied_is_the_devices_profile(store: RegistryStore) -> None:
    store.profiles.create(ProfileSpec(name="flood-ultrasonic-mm", feed="flood"), actor="t")
    store.devices.create(flood("with-profile", profile="flood-ultrasonic-mm"), actor="t")
    store.devices.create(flood("canonical"), actor="t")
    infos = {info.device_id: info for info in store.view.device_infos()}
    assert infos["with-profile"].profile == infos["with-profile"].mapping == "flood-ultrasonic-mm"
    assert infos["canonical"].profile is None and infos["canonical"].mapping is None
