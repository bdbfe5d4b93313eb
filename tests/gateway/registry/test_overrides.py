"""Per-device overrides: replaced as a whole, only the device's feed's fields calibrated, audited."""

from __future__ import annotations

import pytest

from gateway.errors import DeviceNotFoundError, InvalidInputError
from gateway.registry import RegistryStore
from gateway.registry.schemas import DevicePatch, OverridesSpec
from tests.gateway.registry.specs import flood


def test_overrides_are_replaced_as_a_whole_and_audited(store: RegistryStore) -> None:
    store.devices.create(flood(), actor="t")
    assert store.overrides.get("cm-flood-1").thresholds == {}
    first = OverridesSpec.model_validate({"thresholds": {"level_warning_m": 3.0}, "calibration": {"level_m": {}}})
    store.overrides.set("cm-flood-1", first, actor="t")
    second = store.overrides.set("cm-flood-1", OverridesSpec.model_validate({"thresholds": {"x_m": 1.0}}), actor="t")
    assert second.thresholds == {"x_m": 1.0} and second.calibration == {}
    audit = store.audit.find(action="device.overrides").items
    assert audit[0].before == {"thresholds": {"level_warning_m": 3.0}, "calibration": {"level_m": {"offset": 0.0,
                                                                                                  "scale": 1.0}}}
    with pytest.raises(DeviceNotFoundError):
        store.overrides.get("nope")


def test_a_device_does_not_move_to_a_feed_its_calibration_does_not_fit(store: RegistryStore) -> None:
    store.devices.create(flood(), actor="t")
    calibrated = OverridesSpec.model_validate({"calibration": {"level_m": {"offset": -0.1}}})
    store.overrides.set("cm-flood-1", calibrated, actor="t")
    with pytest.raises(InvalidInputError) as excinfo:
        store.devices.update("cm-flood-1", DevicePatch(feed="air", site={}), actor="t")
    assert excinfo.value.problems[0].field == "feed" and "level_m" in excinfo.value.problems[0].message
    assert store.devices.get("cm-flood-1").feed == "flood"
