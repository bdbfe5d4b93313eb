"""A network server's envelope whose device name and DevEUI disagree with the registry is quarantined as
`identity_mismatch`, never stored under the name (nor under the DevEUI's device)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.directory import StaticDirectory
from core.model import DeviceInfo
from tests.collectors.test_pipeline import Harness

DEVICES = [
    DeviceInfo("river-1", "flood", "laem-chabang", "บ่อวิน", dev_eui="70b3d57ed005ab01"),
    DeviceInfo("river-2", "flood", "laem-chabang", "บ่อวิน", dev_eui="70b3d57ed005ab02"),
    DeviceInfo("no-eui", "flood", "laem-chabang", "บ่อวิน"),
]


def uplink(name: str, dev_eui: str) -> dict:
    return {
        "end_device_ids": {"device_id": name, "dev_eui": dev_eui, "application_ids": {"application_id": "app"}},
        "uplink_message": {"decoded_payload": {"level_m": 1.25}},
    }


@pytest.fixture
async def lora(tmp_path: Path):
    h = Harness(tmp_path)
    h.pipeline.directory = StaticDirectory(DEVICES)
    await h.writer.start()
    yield h
    await h.writer.close()
    await h.quarantine.close()


@pytest.mark.parametrize(
    ("name", "dev_eui"),
    [
        ("river-1", "70B3D57ED005AB02"),  # names river-1, carries river-2's DevEUI
        ("river-1", "70B3D57ED005AB99"),  # names river-1, carries a DevEUI registered to no device
        ("no-eui", "70B3D57ED005AB01"),  # names a device without DevEUI, carries river-1's
    ],
)
async def test_envelope_naming_a_device_with_another_devices_dev_eui_is_quarantined(
    lora: Harness, name: str, dev_eui: str
) -> None:
    topic = f"v3/app/devices/{name}/up"
    await lora.send(topic, uplink(name, dev_eui))
    assert lora.stored() == []
    [row] = lora.quarantine.list()
    assert row.reason == "identity_mismatch"
    assert name in row.detail and dev_eui in row.detail


async def test_envelope_whose_name_and_dev_eui_agree_is_stored(lora: Harness) -> None:
    await lora.send("v3/app/devices/river-2/up", uplink("river-2", "70B3D57ED005AB02"))
    [point] = lora.stored()
    assert point.tags["device_id"] == "river-2"


async def test_envelope_whose_name_is_only_a_label_is_stored_under_its_dev_eui(lora: Harness) -> None:
    await lora.send("v3/app/devices/sensor-at-the-bridge/up", uplink("sensor-at-the-bridge", "70B3D57ED005AB01"))
    [point] = lora.stored()
    assert point.tags["device_id"] == "river-1"
    assert lora.quarantine.list() == []
